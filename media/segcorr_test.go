package media

import "testing"

func TestSegmentCorrelation(t *testing.T) {
	sent, _ := ReadAll(SpeechLikeSource(1), 4*SampleRate)
	other, _ := ReadAll(SpeechLikeSource(2), 4*SampleRate)
	// Received: the same audio, 30 ms late, and from 2 s on another 20 ms
	// later, as a jitter buffer that grew mid-call plays it.
	shifted := make([]int16, 0, len(sent)+SampleRate)
	shifted = append(shifted, make([]int16, SampleRate*30/1000)...)
	shifted = append(shifted, sent[:2*SampleRate]...)
	shifted = append(shifted, make([]int16, FrameSamples)...)
	shifted = append(shifted, sent[2*SampleRate:]...)

	cases := []struct {
		name     string
		received []int16
		min, max float64
	}{
		{"same audio", sent, 0.99, 1.01},
		{"shifted by a frame mid-call", shifted, 0.95, 1.01},
		{"another signal", other, -1, 0.5},
		{"silence", make([]int16, len(sent)), -1, 0.01},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seg, whole := SegmentCorrelation(sent, tc.received, SampleRate)
			if seg < tc.min || seg > tc.max {
				t.Fatalf("segments %.3f (whole %.3f), want in [%.2f, %.2f]", seg, whole, tc.min, tc.max)
			}
			t.Logf("segments %.3f, whole %.3f", seg, whole)
		})
	}
}
