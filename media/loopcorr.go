package media

import (
	"math"
	"sort"
)

// LoopCorrelation is how well received matches a signal that loops sent
// (a browser's fake microphone plays its file over and over, from wherever
// it was when the call began): each half second of received is found in
// two loops of sent, where it lies whole, and correlated there. It returns
// the median of those peaks, and the lowest.
func LoopCorrelation(sent, received []int16) (median, lowest float64) {
	const piece, slack, dec = SampleRate / 2, 2 * FrameSamples, 8
	two := append(append([]int16(nil), sent...), sent...)
	down := func(x []int16) []float64 { // a box filter, then every dec-th sample
		out := make([]float64, len(x)/dec)
		for i := range out {
			for _, v := range x[i*dec : i*dec+dec] {
				out[i] += float64(v)
			}
		}
		return out
	}
	d2 := down(two)
	var peaks []float64
	for at := 0; at+piece <= len(received); at += piece {
		p := received[at : at+piece]
		dp := down(p)
		var pe float64
		for _, v := range dp {
			pe += v * v
		}
		best, bestK := math.Inf(-1), 0
		// Coarse: every start where the piece lies whole in two loops
		// (the first loop's length of starts covers every phase).
		for k := 0; k+len(dp) <= len(d2) && k < len(sent)/dec; k++ {
			var xy, ee float64
			for i, v := range dp {
				xy += v * d2[k+i]
				ee += d2[k+i] * d2[k+i]
			}
			if ee > 0 && pe > 0 {
				if c := xy / math.Sqrt(ee*pe); c > best {
					best, bestK = c, k
				}
			}
		}
		// Fine: around it at the full rate.
		lo := max(0, bestK*dec-slack)
		hi := min(len(two), bestK*dec+piece+slack)
		c, _ := Correlation(two[lo:hi], p, 2*slack)
		peaks = append(peaks, c)
	}
	if len(peaks) == 0 {
		return 0, 0
	}
	sort.Float64s(peaks)
	return peaks[len(peaks)/2], peaks[0]
}
