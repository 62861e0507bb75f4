//go:build race

package scale

// raceEnabled is set when testing with -race, which slows encoding and
// decoding several times over: real-time audio then falls behind, and
// what a call hears is not asserted.
const raceEnabled = true
