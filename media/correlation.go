package media

import (
	"math"
	"math/bits"
	"math/cmplx"
	"sort"
)

// Correlation aligns received against sent and returns the peak normalised
// cross-correlation and the lag at which it occurs.
//
// lag is the number of samples by which received is delayed relative to
// sent (received[n+lag] lines up with sent[n]); it lies in
// [-maxLagSamples, maxLagSamples]. peak is the Pearson-style coefficient
// sum(s·r) / sqrt(sum(s²)·sum(r²)) computed over the overlapping samples at
// that lag, so 1 means identical waveforms up to gain and -1 inverted ones.
// Silent or empty inputs give peak 0.
//
// The search is an FFT cross-correlation (O(N log N)): 5 s against 5 s at
// 48 kHz takes about 0.1 s.
func Correlation(sent, received []int16, maxLagSamples int) (peak float64, lag int) {
	if len(sent) == 0 || len(received) == 0 {
		return 0, 0
	}
	maxLagSamples = max(maxLagSamples, 0)
	maxLagSamples = min(maxLagSamples, max(len(sent), len(received)))

	n := len(sent) + len(received) // no circular wrap-around for any lag
	size := 1 << bits.Len(uint(n-1))
	// Both real signals ride in one complex FFT, z = sent + i·received;
	// their spectra separate by conjugate symmetry:
	// S[k] = (Z[k] + conj(Z[-k]))/2, R[k] = (Z[k] − conj(Z[-k]))/2i.
	z := make([]complex128, size)
	for i, v := range sent {
		z[i] = complex(float64(v), 0)
	}
	for i, v := range received {
		z[i] += complex(0, float64(v))
	}
	tw := twiddles(size)
	fft(z, tw, false)
	xc := make([]complex128, size) // cross-spectrum, then cross-correlation
	for k := range size {
		zk, zn := z[k], cmplx.Conj(z[(size-k)&(size-1)])
		s := (zk + zn) / 2
		r := (zk - zn) / complex(0, 2)
		xc[k] = cmplx.Conj(s) * r
	}
	fft(xc, tw, true)

	// Prefix sums of energy give the overlap energies for any lag in O(1).
	es := prefixEnergy(sent)
	er := prefixEnergy(received)

	best, bestLag := math.Inf(-1), 0
	for l := -maxLagSamples; l <= maxLagSamples; l++ {
		idx := l
		if idx < 0 {
			idx += size
		}
		c := real(xc[idx]) / float64(size)
		// Overlap: sent[i] with received[i+l], 0 <= i < len(sent), 0 <= i+l < len(received).
		lo := max(0, -l)
		hi := min(len(sent), len(received)-l)
		if hi-lo <= 0 {
			continue
		}
		den := math.Sqrt((es[hi] - es[lo]) * (er[hi+l] - er[lo+l]))
		if den == 0 {
			continue
		}
		if v := c / den; v > best {
			best, bestLag = v, l
		}
	}
	if math.IsInf(best, -1) {
		return 0, 0
	}
	return exactCorrelation(sent, received, bestLag), bestLag
}

// exactCorrelation recomputes the normalised correlation at one lag directly,
// free of FFT rounding.
func exactCorrelation(sent, received []int16, lag int) float64 {
	var sr, ss, rr float64
	for i := max(0, -lag); i < len(sent) && i+lag < len(received); i++ {
		s, r := float64(sent[i]), float64(received[i+lag])
		sr += s * r
		ss += s * s
		rr += r * r
	}
	if ss == 0 || rr == 0 {
		return 0
	}
	return sr / math.Sqrt(ss*rr)
}

func prefixEnergy(x []int16) []float64 {
	p := make([]float64, len(x)+1)
	for i, v := range x {
		p[i+1] = p[i] + float64(v)*float64(v)
	}
	return p
}

// twiddles returns e^(-2πik/n) for k < n/2.
func twiddles(n int) []complex128 {
	tw := make([]complex128, n/2)
	for k := range tw {
		tw[k] = cmplx.Rect(1, -2*math.Pi*float64(k)/float64(n))
	}
	return tw
}

// fft is an in-place iterative radix-2 FFT; len(x) must be a power of two
// and tw its twiddles. The inverse transform is unscaled.
func fft(x []complex128, tw []complex128, inverse bool) {
	n := len(x)
	if n <= 1 {
		return
	}
	shift := 64 - uint(bits.Len(uint(n-1)))
	for i := range x {
		j := int(bits.Reverse64(uint64(i)) >> shift)
		if j > i {
			x[i], x[j] = x[j], x[i]
		}
	}
	for size := 2; size <= n; size <<= 1 {
		half, step := size/2, n/size
		for start := 0; start < n; start += size {
			for k := range half {
				w := tw[k*step]
				if inverse {
					w = cmplx.Conj(w)
				}
				u := x[start+k]
				v := x[start+k+half] * w
				x[start+k] = u + v
				x[start+k+half] = u - v
			}
		}
	}
}

// SegmentCorrelation judges received audio against what was sent half a
// second at a time: it aligns the whole, then re-aligns each half-second
// segment of sent within ±80 ms (four frames) of where the whole put it, and returns the
// energy-weighted median of the segments' peaks — half of the signal's energy
// lies in segments that correlate at least this well. A jitter buffer that
// shifts playout by a frame mid-call, or one concealed frame, leaves it near
// 1; audio that is mostly wrong or missing scores low. whole is Correlation
// of the two as a single alignment.
func SegmentCorrelation(sent, received []int16, maxLagSamples int) (segments, whole float64) {
	const segLen, slack = SampleRate / 2, 4 * FrameSamples
	whole, lag := Correlation(sent, received, maxLagSamples)
	type seg struct{ peak, energy float64 }
	var segs []seg
	var total float64
	for start := 0; start+segLen <= len(sent); start += segLen {
		at := start + lag
		if at < 0 || at+segLen > len(received) {
			continue
		}
		lo, hi := max(0, at-slack), min(len(received), at+segLen+slack)
		s := sent[start : start+segLen]
		peak, _ := Correlation(s, received[lo:hi], 2*slack)
		var e float64
		for _, v := range s {
			e += float64(v) * float64(v)
		}
		e = math.Sqrt(e)
		segs = append(segs, seg{peak, e})
		total += e
	}
	if total == 0 {
		return 0, whole
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].peak > segs[j].peak })
	acc := 0.0
	for _, s := range segs {
		if acc += s.energy; acc >= total/2 {
			return s.peak, whole
		}
	}
	return segs[len(segs)-1].peak, whole
}
