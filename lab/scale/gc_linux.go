//go:build linux

package scale

import (
	"os"
	"runtime/debug"
	"syscall"
)

// simulationGCPercent is the garbage collector's target in a simulation of
// thousands of hosts: at 4,000 servers the live heap is about 6 GB, and
// with Go's default (100) collecting it took most of the CPU the lookups
// were measured with (10.9 reference round trips at p50, against 5.3 with
// 400; BENCHMARKS.md, Scale).
const simulationGCPercent = 400

// simulationGC has the garbage collector trade memory for CPU while a
// simulation runs, unless GOGC is set: GOGC=400, under a soft memory limit
// of 60% of the machine's memory, so the trade never runs the machine out
// of memory (near the limit the collector works as hard as it must). It
// returns the target in effect and the function that restores the
// settings.
func simulationGC() (percent int, restore func()) {
	var si syscall.Sysinfo_t
	if os.Getenv("GOGC") != "" || syscall.Sysinfo(&si) != nil || si.Totalram == 0 {
		percent = debug.SetGCPercent(100)
		debug.SetGCPercent(percent)
		return percent, func() {}
	}
	total := int64(si.Totalram) * int64(si.Unit)
	oldLimit := debug.SetMemoryLimit(total / 10 * 6)
	oldPercent := debug.SetGCPercent(simulationGCPercent)
	return simulationGCPercent, func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	}
}
