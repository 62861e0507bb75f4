package node

import (
	"fmt"
	"math"
)

// CallSummary is the one JSON line `parley call --json` ends with: what a
// script, the NAT lab or a test reads of a finished call. The CLI fills it
// from the call's statistics (CallInfo, CallStats) and Judge decides OK.
type CallSummary struct {
	OK          bool    `json:"ok"`
	ID          string  `json:"id"`
	SetupMS     float64 `json:"setup_ms"`
	Tier        string  `json:"tier"`
	Path        string  `json:"path"`
	PathDetail  string  `json:"path_detail"`
	RTTMS       float64 `json:"rtt_ms"`
	JitterMS    float64 `json:"jitter_ms"`
	LossPct     float64 `json:"loss_pct"`
	ConcealedMS float64 `json:"concealed_ms"`
	MOS         float64 `json:"mos"`
	ICERestarts int     `json:"ice_restarts"`
	Reason      string  `json:"reason"`
	// SilentPct is the share of the active call whose audio was concealed
	// or never came; over MaxSilentPct the call is not OK, and Why says so.
	SilentPct float64 `json:"silent_pct"`
	RecvKbps  float64 `json:"recv_kbps"`
	SendKbps  float64 `json:"send_kbps"`
	// Why is why the call is not OK; "" when it is.
	Why string `json:"why,omitempty"`
	// Paths are the pairs that carried the media, in order, and
	// FinalPathMS when the last of them took over (since the call began).
	Paths       []PathSwitch `json:"paths,omitempty"`
	FinalPathMS float64      `json:"final_path_ms,omitempty"`
}

// MaxSilentPct is the share of silence from missing audio (in percent of
// the active call) above which a call is judged not OK.
const MaxSilentPct = 20

// Judge sets SilentPct from the call's active time and OK and Why from err
// (how following the call ended) and the figures.
func (s *CallSummary) Judge(err error, activeMS float64) {
	if activeMS > 0 {
		s.SilentPct = math.Round(1000*min(100, 100*s.ConcealedMS/activeMS)) / 1000
	}
	switch {
	case err != nil:
		s.Why = err.Error()
	case s.SetupMS == 0:
		s.Why = "no audio was heard"
	case s.SilentPct > MaxSilentPct:
		s.Why = fmt.Sprintf("%.0f%% of the call was silent from missing audio", s.SilentPct)
	}
	s.OK = s.Why == ""
}
