//go:build !linux

package scale

import "runtime/debug"

// simulationGC leaves the garbage collector alone where the machine's
// memory is not known (see gc_linux.go).
func simulationGC() (percent int, restore func()) {
	percent = debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	return percent, func() {}
}
