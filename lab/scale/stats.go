package scale

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// Dist is a sample of measurements, summarised by percentiles.
type Dist []float64

// P is the q-th quantile (0..1) of d by nearest rank, or 0 for an empty
// sample.
func (d Dist) P(q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append(Dist(nil), d...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Mean is the average of d, or 0.
func (d Dist) Mean() float64 {
	if len(d) == 0 {
		return 0
	}
	t := 0.0
	for _, v := range d {
		t += v
	}
	return t / float64(len(d))
}

// Summary is a sample's count and percentiles, as reported.
type Summary struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	Max float64 `json:"max"`
}

// Summarise reduces d to a Summary.
func (d Dist) Summarise() Summary {
	return Summary{N: len(d), P50: d.P(0.5), P95: d.P(0.95), Max: d.P(1)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fmtMS shows milliseconds at a precision a person reads.
func fmtMS(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

func marshalIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
