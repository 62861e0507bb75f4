//go:build race

package node

// raceEnabled is set under -race, which slows encoding, decoding and SRTP
// several times over: real-time tests carry fewer calls at once.
const raceEnabled = true
