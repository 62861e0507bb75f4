package natlab

import (
	"slices"

	"github.com/parley-net/parley/lab/netlab"
)

// ExpectRelayed lists the pairs whose NATs cannot punch: a symmetric NAT
// against a symmetric or port-restricted one (a port-restricted NAT
// filters on the exact port, and a symmetric one never sends from the
// port its peer learnt). Every other pair without a udp-blocked end must
// end direct.
func ExpectRelayed(a, b netlab.NATType) bool {
	hard := func(x, y netlab.NATType) bool {
		return x == netlab.Symmetric && (y == netlab.Symmetric || y == netlab.PortRestricted)
	}
	return hard(a, b) || hard(b, a)
}

// Punchable says whether a call must end on a direct path: auto path,
// desktop profile, UDP on both sides and NATs that can punch.
func Punchable(spec CallSpec) bool {
	return spec.Profile == "" && spec.Path == "" && spec.Caller != netlab.UDPBlocked && spec.Callee != netlab.UDPBlocked &&
		!ExpectRelayed(spec.Caller, spec.Callee)
}

// Summary sums up the calls of a matrix with a NAT on at least one side
// (auto path, desktop profile): how fast they set up and whether the
// punchable ones ended direct.
type Summary struct {
	NATedCalls int `json:"nated_calls"`
	// SetupP50MS and SetupMaxMS are over the NATed calls that connected;
	// FinalPathP50MS and FinalPathMaxMS likewise for when the final tier
	// took over (Pair.FinalPathMS).
	SetupP50MS     float64 `json:"setup_p50_ms"`
	SetupMaxMS     float64 `json:"setup_max_ms"`
	FinalPathP50MS float64 `json:"final_path_p50_ms"`
	FinalPathMaxMS float64 `json:"final_path_max_ms"`
	// Punchable counts the calls that must end direct, PunchableDirect
	// those that did; Moved the NATed calls that changed tier.
	Punchable       int `json:"punchable"`
	PunchableDirect int `json:"punchable_direct"`
	Moved           int `json:"moved"`
}

// summarize sums up m's pairs; nil when no call had a NAT.
func (m *Matrix) summarize() *Summary {
	var s Summary
	var setup, final []float64
	for _, p := range m.Pairs {
		spec := CallSpec{Caller: netlab.NATType(p.Caller), Callee: netlab.NATType(p.Callee), Profile: p.Profile, Path: p.ForcedPath}
		if spec.Profile != "" || spec.Path != "" || (spec.Caller == netlab.Public && spec.Callee == netlab.Public) {
			continue
		}
		s.NATedCalls++
		if Punchable(spec) {
			s.Punchable++
			if p.OK && p.Path == "direct" {
				s.PunchableDirect++
			}
		}
		if !p.OK {
			continue
		}
		if p.FirstPath != "" {
			s.Moved++
		}
		setup = append(setup, p.SetupMS)
		final = append(final, p.FinalPathMS)
	}
	if s.NATedCalls == 0 {
		return nil
	}
	s.SetupP50MS, s.SetupMaxMS = median(setup), slices.Max(append(setup, 0))
	s.FinalPathP50MS, s.FinalPathMaxMS = median(final), slices.Max(append(final, 0))
	return &s
}

// median is the middle value (the mean of the two middle ones for an even
// count), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return round((v[n/2-1]+v[n/2])/2, 1)
}
