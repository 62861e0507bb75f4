//go:build race

package media

// raceEnabled is set when testing with -race, which slows encoding and
// decoding several times over; real-time quality assertions are relaxed.
const raceEnabled = true
