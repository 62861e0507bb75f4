package media

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestCorrelation(t *testing.T) {
	speech, err := ReadAll(SpeechLikeSource(5), 2*SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	// delayed returns speech delayed by d samples (negative: advanced),
	// scaled, with white noise of the given RMS.
	delayed := func(d int, gain, noise float64) []int16 {
		out := make([]int16, len(speech))
		for i := range out {
			var v float64
			if j := i - d; j >= 0 && j < len(speech) {
				v = gain * float64(speech[j])
			}
			out[i] = clamp16(v + noise*rng.NormFloat64())
		}
		return out
	}
	silence := make([]int16, 1000)
	tests := []struct {
		name     string
		sent     []int16
		recv     []int16
		maxLag   int
		wantPeak float64 // minimum
		wantLag  int
	}{
		{"identical", speech, speech, 100, 0.999999, 0},
		{"delayed and quieter", speech, delayed(1234, 0.4, 0), 4800, 0.999, 1234},
		{"advanced", speech, delayed(-333, 1, 0), 4800, 0.999, -333},
		{"noisy", speech, delayed(480, 1, 300), 4800, 0.9, 480},
		{"lag outside the search", speech, delayed(5000, 1, 0), 100, -1, 0},
		{"silence", silence, silence, 10, 0, 0},
		{"empty", nil, speech, 10, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			peak, lag := Correlation(tc.sent, tc.recv, tc.maxLag)
			t.Logf("peak %.6f lag %d", peak, lag)
			if tc.wantPeak < 0 {
				if peak > 0.5 {
					t.Errorf("peak %.3f for a lag outside the window", peak)
				}
				return
			}
			if peak < tc.wantPeak || lag != tc.wantLag {
				t.Errorf("peak %.6f lag %d, want >= %.6f at %d", peak, lag, tc.wantPeak, tc.wantLag)
			}
			if peak > 1+1e-9 || math.IsNaN(peak) {
				t.Errorf("peak %v out of range", peak)
			}
		})
	}
}

// BenchmarkCorrelation5s aligns 5 s against 5 s at 48 kHz with a ±1 s
// search, the size of a call-quality check.
func BenchmarkCorrelation5s(b *testing.B) {
	a, err := ReadAll(SpeechLikeSource(6), 5*SampleRate)
	if err != nil {
		b.Fatal(err)
	}
	r := append(make([]int16, 777), a...)
	b.ResetTimer()
	for b.Loop() {
		Correlation(a, r, SampleRate)
	}
}

// segmentCorrelation aligns each segLen-sample segment of sent separately
// within received (searching ±window around the overall lag) and returns
// the energy-weighted mean of the segments' peaks, and the overall lag. Unlike
// a single alignment it tolerates the playout shifting by a frame mid-call
// (an expansion after a late packet, a frame dropped to cut delay), which a
// loaded test machine can cause; broken audio still scores low.
func segmentCorrelation(sent, received []int16, maxLag, segLen, window int) (float64, int) {
	_, lag := Correlation(sent, received, maxLag)
	var sum, weight float64
	for start := 0; start+segLen <= len(sent); start += segLen {
		seg := sent[start : start+segLen]
		lo := max(0, start+lag-window)
		hi := min(len(received), start+lag+segLen+window)
		if hi-lo < segLen/2 {
			continue
		}
		// Correlation's lag is relative to the start of received[lo:].
		peak, _ := Correlation(seg, received[lo:hi], hi-lo)
		e := frameRMS(seg)
		sum += peak * e
		weight += e
	}
	if weight == 0 {
		return 0, lag
	}
	return sum / weight, lag
}

func frameRMS(x []int16) float64 {
	if len(x) == 0 {
		return 0
	}
	var e float64
	for _, v := range x {
		e += float64(v) * float64(v)
	}
	return math.Sqrt(e / float64(len(x)))
}
