package media

import "time"

// E-model (ITU-T G.107) constants for the simplified computation used here.
const (
	// eModelR0 is R0 − Is − (A = 0) with every G.107 default parameter:
	// the rating of a perfect narrowband connection.
	eModelR0 = 93.2
	// opusIe is the equipment impairment of Opus. ITU-T G.113 lists no value
	// for Opus; at voice bitrates it is transparent next to narrowband
	// telephony, so we take 0 like G.711.
	opusIe = 0.0
	// opusBpl is the packet-loss robustness factor. We take G.113's value
	// for G.711 with packet loss concealment (25.1), a conservative choice
	// for a codec with modern concealment.
	opusBpl = 25.1
	// codecDelay is the one-way delay Opus itself adds: a 20 ms frame plus
	// the encoder's 6.5 ms look-ahead.
	codecDelay = 26500 * time.Microsecond
)

// EModelR returns the transmission rating factor R of ITU-T G.107 for a
// call with the given one-way mouth-to-ear delay and packet loss (percent of
// frames lost or concealed, random loss), using the common simplification:
//
//	R = 93.2 − Id − Ie,eff
//	Id = 0.024·Ta + 0.11·(Ta − 177.3)·H(Ta − 177.3)          (Ta in ms)
//	Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl + Bpl)                (BurstR = 1)
//
// with Ie = 0 and Bpl = 25.1 for Opus (see opusIe, opusBpl). The delay term
// is the Cole–Rosenbluth fit of G.107's Idd.
func EModelR(oneWayDelay time.Duration, lossPercent float64) float64 {
	ta := float64(oneWayDelay) / float64(time.Millisecond)
	ta = max(ta, 0)
	id := 0.024 * ta
	if ta > 177.3 {
		id += 0.11 * (ta - 177.3)
	}
	ppl := min(max(lossPercent, 0), 100)
	ie := opusIe + (95-opusIe)*ppl/(ppl+opusBpl)
	return eModelR0 - id - ie
}

// MOSFromR converts an E-model rating to an estimated mean opinion score
// (ITU-T G.107 Annex B, equation B-4): 1 for R ≤ 0, 4.5 for R ≥ 100.
func MOSFromR(r float64) float64 {
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return max(1, 1+0.035*r+r*(r-60)*(100-r)*7e-6)
}
