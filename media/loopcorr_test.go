package media

import "testing"

func TestLoopCorrelation(t *testing.T) {
	loop, err := ReadAll(SpeechLikeSource(3), SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ReadAll(SpeechLikeSource(4), 2*SampleRate)
	// Received: the loop played over and over, from a third of the way in.
	var played []int16
	for range 4 {
		played = append(played, loop...)
	}
	got := played[SampleRate/3 : SampleRate/3+2*SampleRate]
	for _, tc := range []struct {
		name     string
		received []int16
		min, max float64
	}{
		{"the loop from anywhere", got, 0.99, 1.01},
		{"another signal", other, -1, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			med, _ := LoopCorrelation(loop, tc.received)
			if med < tc.min || med > tc.max {
				t.Fatalf("LoopCorrelation = %.3f, want %.2f to %.2f", med, tc.min, tc.max)
			}
		})
	}
}
