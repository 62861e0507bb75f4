package media

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
)

// Source produces the audio a Session sends: 48 kHz mono, one 20 ms frame
// (FrameSamples int16 samples) per call.
//
// ReadFrame fills all of frame, which always has length FrameSamples. It
// returns io.EOF when the source is exhausted (frame contents are then
// ignored); the session sends silence from then on. Any other error is
// logged and also ends the source.
//
// A Session calls ReadFrame from a single goroutine, paced in real time by a
// 20 ms clock; a source must not sleep to pace itself. Sources backed by a
// device (a microphone) may block briefly until a frame is available.
//
// Sources and sinks that hold resources (files, devices) implement
// io.Closer. A Session never closes its Source or Sink: they belong to the
// caller, who closes them after Done.
type Source interface {
	ReadFrame(frame []int16) error
}

// ErrFrameSize is returned when a frame slice is not FrameSamples long.
var ErrFrameSize = errors.New("media: frame must be exactly 960 samples (20 ms at 48 kHz)")

// SilenceSource returns a Source that produces digital silence forever.
func SilenceSource() Source { return silence{} }

type silence struct{}

func (silence) ReadFrame(frame []int16) error {
	if len(frame) != FrameSamples {
		return ErrFrameSize
	}
	clear(frame)
	return nil
}

// ToneSource returns a Source producing a sine wave of hz at amplitude
// (a fraction of full scale, 0 < amplitude <= 1) forever. The phase is
// continuous across frames.
func ToneSource(hz, amplitude float64) (Source, error) {
	if !(hz > 0 && hz < SampleRate/2) {
		return nil, fmt.Errorf("media: tone frequency %v Hz outside (0, 24000)", hz)
	}
	if !(amplitude > 0 && amplitude <= 1) {
		return nil, fmt.Errorf("media: tone amplitude %v outside (0, 1]", amplitude)
	}
	return &tone{step: 2 * math.Pi * hz / SampleRate, amp: amplitude * 32767}, nil
}

type tone struct {
	phase, step, amp float64
}

func (t *tone) ReadFrame(frame []int16) error {
	if len(frame) != FrameSamples {
		return ErrFrameSize
	}
	for i := range frame {
		frame[i] = int16(math.Round(t.amp * math.Sin(t.phase)))
		t.phase += t.step
		if t.phase > 2*math.Pi {
			t.phase -= 2 * math.Pi
		}
	}
	return nil
}

// LimitSource returns a Source that yields at most frames frames of src and
// then io.EOF.
func LimitSource(src Source, frames int) Source {
	return &limited{src: src, left: frames}
}

type limited struct {
	src  Source
	left int
}

func (l *limited) ReadFrame(frame []int16) error {
	if l.left <= 0 {
		return io.EOF
	}
	l.left--
	return l.src.ReadFrame(frame)
}

// Close closes the underlying source if it is an io.Closer.
func (l *limited) Close() error {
	if c, ok := l.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// SpeechLikeSource returns a deterministic, endless speech-like test signal:
// a glottal pulse train (Rosenberg pulse shape, differentiated for lip
// radiation) whose pitch glides between 100 and 250 Hz, shaped by three
// formant resonators that move from vowel to vowel, and gated into
// syllables at roughly 4 per second with raised-cosine attack and decay.
//
// It is what an Opus voice encoder codes well, and its aperiodic syllable
// envelope and gliding pitch give cross-correlation a single sharp peak, so
// tests can align what was sent with what was heard. The same seed always
// produces the same samples.
func SpeechLikeSource(seed uint64) Source {
	s := &speechLike{
		rng: rand.New(rand.NewPCG(seed, 0x70617273_6c657921)),
	}
	for i := range s.res {
		s.res[i] = resonator{}
	}
	s.nextSyllable()
	return s
}

// vowels holds formant frequencies (F1, F2, F3 in Hz) of a few vowels.
var vowels = [...][3]float64{
	{730, 1090, 2440}, // a
	{530, 1840, 2480}, // e
	{270, 2290, 3010}, // i
	{570, 840, 2410},  // o
	{300, 870, 2240},  // u
	{660, 1720, 2410}, // æ
}

var formantBandwidths = [3]float64{90, 110, 170}

type resonator struct {
	a1, a2, b0 float64
	y1, y2     float64
}

func (r *resonator) set(freq, bw float64) {
	rad := math.Exp(-math.Pi * bw / SampleRate)
	theta := 2 * math.Pi * freq / SampleRate
	r.a1 = 2 * rad * math.Cos(theta)
	r.a2 = -rad * rad
	// Unity gain at the resonance frequency.
	re := 1 - r.a1*math.Cos(theta) - r.a2*math.Cos(2*theta)
	im := r.a1*math.Sin(theta) + r.a2*math.Sin(2*theta)
	r.b0 = math.Hypot(re, im)
}

func (r *resonator) step(x float64) float64 {
	y := r.b0*x + r.a1*r.y1 + r.a2*r.y2
	r.y2, r.y1 = r.y1, y
	return y
}

type speechLike struct {
	rng *rand.Rand
	n   int64 // samples produced

	// Current syllable: voiced for voicedLen samples, then silent for gapLen.
	pos, voicedLen, gapLen int
	from, to               [3]float64 // formant glide within the syllable
	loud                   float64

	glottalPhase float64
	prevGlottal  float64
	res          [3]resonator
}

func (s *speechLike) nextSyllable() {
	s.pos = 0
	s.voicedLen = (110 + s.rng.IntN(190)) * SampleRate / 1000 // 110–300 ms
	s.gapLen = (40 + s.rng.IntN(120)) * SampleRate / 1000     // 40–160 ms
	s.from = vowels[s.rng.IntN(len(vowels))]
	s.to = vowels[s.rng.IntN(len(vowels))]
	s.loud = 0.6 + 0.4*s.rng.Float64()
}

func (s *speechLike) ReadFrame(frame []int16) error {
	if len(frame) != FrameSamples {
		return ErrFrameSize
	}
	const (
		attack = 25 * SampleRate / 1000
		decay  = 45 * SampleRate / 1000
		gain   = 0.35 * 32767
		update = 48 // formant coefficient update interval (1 ms)
	)
	for i := range frame {
		if s.pos >= s.voicedLen+s.gapLen {
			s.nextSyllable()
		}
		t := float64(s.n) / SampleRate
		// Pitch glides inside 100–250 Hz: a slow intonation contour plus a
		// faster wobble, with per-syllable declination.
		f0 := 172 + 55*math.Sin(2*math.Pi*0.83*t) + 18*math.Sin(2*math.Pi*3.7*t+1.3)
		if s.pos < s.voicedLen {
			f0 -= 20 * float64(s.pos) / float64(s.voicedLen)
		}
		f0 = min(max(f0, 100), 250)

		if s.pos%update == 0 && s.pos < s.voicedLen {
			frac := float64(s.pos) / float64(s.voicedLen)
			for k := range s.res {
				f := s.from[k] + (s.to[k]-s.from[k])*frac
				s.res[k].set(f, formantBandwidths[k])
			}
		}

		// Rosenberg glottal flow pulse: 40 % opening, 16 % closing.
		s.glottalPhase += f0 / SampleRate
		if s.glottalPhase >= 1 {
			s.glottalPhase--
		}
		p := s.glottalPhase
		var g float64
		switch {
		case p < 0.40:
			g = 0.5 * (1 - math.Cos(math.Pi*p/0.40))
		case p < 0.56:
			g = math.Cos(math.Pi * (p - 0.40) / (2 * 0.16))
		}
		// Lip radiation: first difference of the flow.
		x := (g - s.prevGlottal) * 80
		s.prevGlottal = g

		var env float64
		switch {
		case s.pos < attack:
			env = 0.5 * (1 - math.Cos(math.Pi*float64(s.pos)/attack))
		case s.pos < s.voicedLen-decay:
			env = 1
		case s.pos < s.voicedLen:
			env = 0.5 * (1 + math.Cos(math.Pi*float64(s.pos-(s.voicedLen-decay))/decay))
		}
		y := x * env * s.loud
		// Formants in parallel with falling gains give a speech-like tilt.
		v := s.res[0].step(y) + 0.5*s.res[1].step(y) + 0.25*s.res[2].step(y)
		frame[i] = clamp16(v * gain)
		s.pos++
		s.n++
	}
	return nil
}

func clamp16(v float64) int16 {
	switch {
	case v >= math.MaxInt16:
		return math.MaxInt16
	case v <= math.MinInt16:
		return math.MinInt16
	}
	return int16(math.Round(v))
}

// ReadAll reads n samples (rounded up to whole frames) from src into a new
// slice; it stops early at io.EOF. It is meant for tests and tools that need
// the reference signal a Session sent.
func ReadAll(src Source, n int) ([]int16, error) {
	out := make([]int16, 0, min(n, 60*SampleRate)+FrameSamples)
	frame := make([]int16, FrameSamples)
	for len(out) < n {
		if err := src.ReadFrame(frame); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return out, err
		}
		out = append(out, frame...)
	}
	return out, nil
}
