package outage

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// RunSummary is one topology × scenario as summary.json holds it.
type RunSummary struct {
	Topology  string      `json:"topology"`
	Scenario  string      `json:"scenario"`
	Calls     CallSummary `json:"calls"`
	Messages  MsgSummary  `json:"messages"`
	RecoveryS float64     `json:"recovery_s"`
}

// CallSummary counts a run's calls. Attempted are the planned calls the
// lab placed; Connected reached "active"; Dropped connected and ended
// before the lab hung up. GapMSP95 is the 95th percentile, over calls up
// when the outage began or during it, of the longest silence the caller
// heard in the outage window (in the control run, the window a permanent
// fault would have). Setup is from the call request to the first decoded
// audio, as the caller's daemon reports it.
type CallSummary struct {
	Attempted  int     `json:"attempted"`
	Connected  int     `json:"connected"`
	Dropped    int     `json:"dropped"`
	GapMSP95   float64 `json:"gap_ms_p95"`
	SetupMSP50 float64 `json:"setup_ms_p50"`
	SetupMSP95 float64 `json:"setup_ms_p95"`
}

// MsgSummary counts message copies: a message to a group counts once per
// member it is for. Delivered copies are in the recipient's history at
// the end; lost copies are neither there nor, by the sender's account,
// still on their way; the rest are pending (Report's runs.csv has them).
// Latency is from the send request to the recipient's commit (its
// received_ms), offline time included.
type MsgSummary struct {
	Sent         int     `json:"sent"`
	Delivered    int     `json:"delivered"`
	Lost         int     `json:"lost"`
	Duplicates   int     `json:"duplicates"`
	LatencyMSP50 float64 `json:"latency_ms_p50"`
	LatencyMSP95 float64 `json:"latency_ms_p95"`
}

// Second is one second of a run's timeline.
type Second struct {
	T             int // seconds after the workload's start
	CallsExpected int // planned calls in progress (from when active, or at most 3 s after their start)
	CallsUp       int // of those, active with a media path at the last poll
	// CallsControlDown: of the expected calls, those that never connected
	// in the control run (none) of the same topology either; recovery
	// does not wait for them.
	CallsControlDown int
	Availability     float64 // CallsUp / CallsExpected, 1 when none expected
	Pending          int     // message copies sent and not yet committed by the recipient
	// Overdue: of the pending copies, those sent 5 s ago or more to a
	// recipient online ever since, and delivered later.
	Overdue int
	Outage  bool // inside the outage window
}

// Healthy: every expected call up (but those the control run could not
// connect either) and no message overdue.
func (s Second) Healthy() bool {
	return s.CallsUp >= s.CallsExpected-s.CallsControlDown && s.Overdue == 0
}

// RunResult is everything measured in one topology × scenario.
type RunResult struct {
	Topology Topology
	Scenario string
	Calls    []*CallEvent
	Messages []*MsgEvent
	Faults   []FaultEvent
	Length   time.Duration
	Drain    time.Duration
	// OutageStart and OutageEnd are the fault's span; zero for the
	// control run. Permanent: the fault lasts the rest of the run.
	OutageStart, OutageEnd time.Duration
	Permanent              bool
	Dir                    string

	Summary RunSummary
	Pending int // message copies still on their way at the end
	// SendFailed: lost copies whose send request the sender's daemon
	// refused (it could not even queue them, e.g. the handle did not
	// resolve).
	SendFailed int
	// GapCalls is how many calls GapMSP95 is over (0: none was up across
	// the outage window, and the percentile means nothing).
	GapCalls int
	Timeline []Second
}

const (
	setupAllowance = 3 * time.Second
	overdueAfter   = 5 * time.Second
	// settleSeconds: recovery needs this many healthy seconds in a row.
	settleSeconds = 3
)

// summarize fills Summary, Pending and Timeline from the events.
// control is the same topology's control run, if any.
func (res *RunResult) summarize(wl *Workload, control *RunResult) {
	s := RunSummary{Topology: string(res.Topology), Scenario: res.Scenario}
	var setups, gaps, lat []float64
	for _, c := range res.Calls {
		s.Calls.Attempted++
		if c.Connected {
			s.Calls.Connected++
			setups = append(setups, c.SetupMS)
		}
		if c.Dropped {
			s.Calls.Dropped++
		}
		if c.GapMS >= 0 {
			gaps = append(gaps, c.GapMS)
		}
	}
	s.Calls.SetupMSP50, s.Calls.SetupMSP95 = percentile(setups, 50), percentile(setups, 95)
	s.Calls.GapMSP95 = percentile(gaps, 95)
	res.GapCalls = len(gaps)
	res.Pending, res.SendFailed = 0, 0
	for _, m := range res.Messages {
		for _, rc := range m.Recipients {
			s.Messages.Sent++
			switch rc.Outcome {
			case "delivered":
				s.Messages.Delivered++
				lat = append(lat, rc.LatencyMS)
			case "pending":
				res.Pending++
			default:
				s.Messages.Lost++
				if m.Error != "" {
					res.SendFailed++
				}
			}
			s.Messages.Duplicates += max(0, rc.Copies-1)
		}
	}
	s.Messages.LatencyMSP50, s.Messages.LatencyMSP95 = percentile(lat, 50), percentile(lat, 95)
	res.Timeline = res.timeline(wl, control)
	s.RecoveryS = res.recovery()
	res.Summary = s
}

func (res *RunResult) timeline(wl *Workload, control *RunResult) []Second {
	controlDown := map[int]bool{}
	if control != nil {
		for _, c := range control.Calls {
			controlDown[c.Plan.ID] = !c.Connected
		}
	}
	n := int((res.Length + res.Drain) / time.Second)
	out := make([]Second, n)
	for i := range out {
		t := time.Duration(i)*time.Second + time.Second/2
		sec := Second{T: i, Outage: res.Scenario != None && t >= res.OutageStart && (t < res.OutageEnd || res.Permanent && t < res.Length)}
		for _, c := range res.Calls {
			from := c.Plan.Start + setupAllowance
			if c.Connected {
				from = min(from, c.ActiveAt)
			}
			if t >= from && t < c.Plan.Start+c.Plan.Length {
				sec.CallsExpected++
				if c.Up[i] {
					sec.CallsUp++
				}
				if controlDown[c.Plan.ID] {
					sec.CallsControlDown++
				}
			}
		}
		for _, m := range res.Messages {
			if m.SentAt > t {
				continue
			}
			for _, rc := range m.Recipients {
				if rc.Delivered && rc.ReceivedAt <= t {
					continue
				}
				sec.Pending++
				if rc.Delivered && t-m.SentAt >= overdueAfter && !wl.offlineDuring(rc.Handle, m.SentAt, t) {
					sec.Overdue++
				}
			}
		}
		sec.Availability = 1
		if sec.CallsExpected > 0 {
			sec.Availability = float64(sec.CallsUp) / float64(sec.CallsExpected)
		}
		out[i] = sec
	}
	return out
}

// recovery is the time from the outage's end (its start, when it lasts
// the rest of the run) to the start of the first run of settleSeconds
// healthy seconds after which no unhealthy second follows; 0 for the
// control run; -1 when it is still unhealthy within settleSeconds of the
// workload's end (nothing shows it recovered).
func (res *RunResult) recovery() float64 {
	if res.Scenario == None {
		return 0
	}
	from := res.OutageEnd
	if res.Permanent {
		from = res.OutageStart
	}
	first := int(from / time.Second)
	last := -1 // the last unhealthy second at or after first
	for i := first; i < len(res.Timeline); i++ {
		if !res.Timeline[i].Healthy() {
			last = i
		}
	}
	if last < 0 {
		return 0
	}
	if last >= int(res.Length/time.Second)-settleSeconds {
		return -1
	}
	return round1(float64(last+1) - from.Seconds())
}

// percentile is the nearest-rank percentile of xs; 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return round1(s[max(0, min(i, len(s)-1))])
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// line is the run in one progress line.
func (res *RunResult) line() string {
	s := res.Summary
	rec := fmt.Sprintf("%.1f s", s.RecoveryS)
	if s.RecoveryS < 0 {
		rec = "not recovered"
	}
	return fmt.Sprintf("%s × %s: calls %d/%d connected, %d dropped, setup p50 %.0f ms, gap p95 %.0f ms; messages %d sent, %d delivered, %d pending, %d lost, %d dup, latency p50 %.0f ms p95 %.0f ms; recovery %s",
		res.Topology, res.Scenario, s.Calls.Connected, s.Calls.Attempted, s.Calls.Dropped, s.Calls.SetupMSP50, s.Calls.GapMSP95,
		s.Messages.Sent, s.Messages.Delivered, res.Pending, s.Messages.Lost, s.Messages.Duplicates, s.Messages.LatencyMSP50, s.Messages.LatencyMSP95, rec)
}
