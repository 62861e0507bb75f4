package media

import (
	"math"
	"testing"
	"time"
)

func TestEModel(t *testing.T) {
	tests := []struct {
		name    string
		delay   time.Duration
		loss    float64
		wantR   float64
		wantMOS float64
	}{
		// G.107's default connection: R = 93.2, MOS 4.41.
		{"perfect", 0, 0, 93.2, 4.409},
		// Id = 0.024·100 = 2.4.
		{"100 ms", 100 * time.Millisecond, 0, 90.8, 4.358},
		// Id = 0.024·177.3 exactly at the knee.
		{"knee", 177300 * time.Microsecond, 0, 93.2 - 4.2552, 4.312},
		// Id = 0.024·300 + 0.11·122.7 = 20.697.
		{"300 ms", 300 * time.Millisecond, 0, 72.503, 3.712},
		// Ie,eff = 95·Ppl/(Ppl+25.1): 95·2/27.1 = 7.011.
		{"2% loss", 0, 2, 86.189, 4.235},
		// Ppl = Bpl halves the way to 95: Ie,eff = 47.5.
		{"loss = Bpl", 0, 25.1, 45.7, 2.350},
		{"total loss", 0, 100, 93.2 - 95*100/125.1, 1.177},
		{"negative loss clamps", 0, -5, 93.2, 4.409},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := EModelR(tc.delay, tc.loss)
			if math.Abs(r-tc.wantR) > 0.01 {
				t.Errorf("R = %.3f, want %.3f", r, tc.wantR)
			}
			if mos := MOSFromR(r); math.Abs(mos-tc.wantMOS) > 0.005 {
				t.Errorf("MOS = %.3f, want %.3f", mos, tc.wantMOS)
			}
		})
	}
}

// TestMOSFromR checks G.107 Annex B's conversion at its anchor points.
func TestMOSFromR(t *testing.T) {
	for _, tc := range []struct{ r, mos float64 }{
		{-10, 1}, {0, 1}, {50, 2.575}, {60, 3.1}, {70, 3.597}, {80, 4.024}, {90, 4.339}, {100, 4.5}, {120, 4.5},
	} {
		if got := MOSFromR(tc.r); math.Abs(got-tc.mos) > 0.001 {
			t.Errorf("MOSFromR(%v) = %.4f, want %.3f", tc.r, got, tc.mos)
		}
	}
	// Monotonic over the useful range.
	prev := 0.0
	for r := 0.0; r <= 100; r += 0.5 {
		m := MOSFromR(r)
		if m < prev {
			t.Fatalf("MOS falls from %.4f to %.4f at R=%v", prev, m, r)
		}
		prev = m
	}
}
