package media

import "math"

// resampler converts a mono stream between two sample rates with a
// Kaiser-windowed sinc interpolator (the bandlimited interpolation of
// J. O. Smith, "Digital Audio Resampling"). The kernel is tabulated finely and
// read with linear interpolation, so any ratio works without a rational
// polyphase decomposition.
type resampler struct {
	step  float64   // input samples advanced per output sample (inRate/outRate)
	cut   float64   // cutoff as a fraction of the input Nyquist rate
	half  float64   // kernel half-width in input samples
	table []float64 // kernel h(u) for u = i/tableRes, 0 <= u <= half
	buf   []float64 // input; buf[0] is the oldest sample still needed
	t     float64   // position of the next output sample, in buf indices
	// end is the buf index one past the last real input sample once the
	// input has ended; -1 while the input continues.
	end float64
}

const (
	resampleZeroCrossings = 16  // kernel half-width at the cutoff, in zero crossings
	resampleTableRes      = 512 // table entries per input sample
	resampleKaiserBeta    = 8.0 // ≈80 dB stop band
	resampleRolloff       = 0.92
)

func newResampler(inRate, outRate int) *resampler {
	r := &resampler{
		step: float64(inRate) / float64(outRate),
		cut:  resampleRolloff * min(1, float64(outRate)/float64(inRate)),
		end:  -1,
	}
	r.half = resampleZeroCrossings / r.cut
	n := int(math.Ceil(r.half*resampleTableRes)) + 2
	r.table = make([]float64, n)
	i0b := besselI0(resampleKaiserBeta)
	for i := range r.table {
		u := float64(i) / resampleTableRes
		if u > r.half {
			break
		}
		x := u / r.half
		w := besselI0(resampleKaiserBeta*math.Sqrt(1-x*x)) / i0b
		r.table[i] = r.cut * sinc(r.cut*u) * w
	}
	// Zeros before the first sample let the first outputs see a full kernel.
	pad := int(math.Ceil(r.half)) + 1
	r.buf = make([]float64, pad, pad+4096)
	r.t = float64(pad)
	return r
}

// push appends input samples.
func (r *resampler) push(x []float64) {
	r.buf = append(r.buf, x...)
}

// finish marks the end of input; the remaining outputs become available.
func (r *resampler) finish() {
	if r.end >= 0 {
		return
	}
	r.end = float64(len(r.buf))
	pad := int(math.Ceil(r.half)) + 1
	r.buf = append(r.buf, make([]float64, pad)...)
}

// pull writes up to len(out) output samples and returns how many it wrote.
// It returns fewer when more input is needed (or, after finish, when the
// input is used up).
func (r *resampler) pull(out []float64) int {
	n := 0
	for n < len(out) {
		if r.end >= 0 {
			if r.t >= r.end {
				break
			}
		} else if r.t+r.half+1 >= float64(len(r.buf)) {
			break
		}
		out[n] = r.at(r.t)
		n++
		r.t += r.step
	}
	// Drop input no future output can reach.
	if drop := int(r.t-r.half) - 1; drop > 0 {
		copy(r.buf, r.buf[drop:])
		r.buf = r.buf[:len(r.buf)-drop]
		r.t -= float64(drop)
		if r.end >= 0 {
			r.end -= float64(drop)
		}
	}
	return n
}

func (r *resampler) at(t float64) float64 {
	lo := max(int(math.Ceil(t-r.half)), 0)
	hi := min(int(math.Floor(t+r.half)), len(r.buf)-1)
	var acc float64
	for k := lo; k <= hi; k++ {
		u := math.Abs(t-float64(k)) * resampleTableRes
		i := int(u)
		if i+1 >= len(r.table) {
			continue
		}
		f := u - float64(i)
		acc += r.buf[k] * (r.table[i] + f*(r.table[i+1]-r.table[i]))
	}
	return acc
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// besselI0 is the zeroth-order modified Bessel function of the first kind,
// by its power series (converges quickly for the arguments used here).
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	for k := 1; k < 50; k++ {
		term *= (x / 2) / float64(k)
		sum += term * term
		if term*term < sum*1e-17 {
			break
		}
	}
	return sum
}
