package natlab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/parley-net/parley/lab/netlab"
	"github.com/parley-net/parley/media"
)

// The fault call sends audio long enough to hear a recovery, and the kill
// comes once the call has settled.
const (
	faultAudio     = 12 * time.Second
	faultKillAfter = 3 * time.Second
	// silenceRMS is the level below which a 20 ms frame counts as silent:
	// about -50 dBFS. The speech-like signal's own pauses stay below it
	// for at most a few hundred milliseconds (NaturalGapMS).
	silenceRMS = 100
	frame      = media.SampleRate / 50
)

// What a fault call is there to show.
const (
	// ExpectUnaffected: a direct call, which the killed server does not
	// carry; it must go on without a gap.
	ExpectUnaffected = "unaffected"
	// ExpectMoves: a call relayed through the killed server whose policy
	// allows another relay tier; it must move there.
	ExpectMoves = "moves"
)

// FaultReport is what one kill did to the calls running through the lab.
type FaultReport struct {
	// Killed is the server SIGKILLed: "cloud" (the cloud relay) or
	// "supernode".
	Killed string `json:"killed"`
	// KilledAfterMS is when the kill came, after the last of the calls
	// became active; 0 when some call never did and nothing was killed.
	KilledAfterMS float64 `json:"killed_after_ms"`
	// Calls are the calls that ran through the kill.
	Calls []FaultCall `json:"calls"`
}

// FaultCall is what happened to one call when the server was killed.
type FaultCall struct {
	// Expect is what the call is there to show: ExpectUnaffected or
	// ExpectMoves.
	Expect string `json:"expect"`
	// Call is the call; its Path is the tier the caller reported at the
	// end.
	Call Pair `json:"call"`
	// TierAtKill is the tier the caller last reported before the kill.
	TierAtKill string `json:"tier_at_kill"`
	// GapMS is the longest run of silent 20 ms frames in the callee's
	// recording (silence, or concealment that faded out), and GapStartMS
	// where in the recording it begins. NaturalGapMS is the longest such
	// run in the signal sent, for comparison: a GapMS near it means no
	// audible outage.
	GapMS        float64 `json:"gap_ms"`
	GapStartMS   float64 `json:"gap_start_ms"`
	NaturalGapMS float64 `json:"natural_gap_ms"`
	// Recovered: audio was heard again after the gap; HeardAfterMS is
	// how much.
	Recovered    bool    `json:"recovered"`
	HeardAfterMS float64 `json:"heard_after_ms"`
	// RecordingMS is the length of the callee's recording.
	RecordingMS float64 `json:"recording_ms"`
	// ConcealedMS is the caller's count of audio made up by loss
	// concealment, as it reports it.
	ConcealedMS float64 `json:"concealed_ms"`
	// EndPath is the candidate pair carrying the call when it ended, as
	// the caller reported it; "none" when no pair was selected (the media
	// path never came back). ICERestarts counts the caller's ICE restarts.
	EndPath     string `json:"end_path"`
	ICERestarts int    `json:"ice_restarts"`
}

// FaultCalls are the calls a kill of which ("cloud" or "supernode") is
// tested with: a call from public to public relayed through the server
// to kill, by a policy that prefers its tier and allows the other relay
// tier ("cloud,supernode" or "supernode,cloud"), which must move; and,
// beside it, a direct call between two hosts of the first other type
// whose calls go direct (port-restricted, restricted or full-cone), which
// must not notice. Public hosts signal each other directly, so the kill
// hits the media path alone. Without public hosts in the lab there is no
// fault call.
func (l *Lab) FaultCalls(which string) []FaultSpec {
	if !slices.Contains(l.opts.Types, netlab.Public) {
		return nil
	}
	other := map[string]string{FaultCloud: FaultSupernode, FaultSupernode: FaultCloud}[which]
	out := []FaultSpec{{Expect: ExpectMoves, Spec: CallSpec{Caller: netlab.Public, Callee: netlab.Public, Path: which + "," + other}}}
	for _, t := range []netlab.NATType{netlab.PortRestricted, netlab.Restricted, netlab.FullCone} {
		if slices.Contains(l.opts.Types, t) {
			out = append(out, FaultSpec{Expect: ExpectUnaffected, Spec: CallSpec{Caller: t, Callee: t}})
			break
		}
	}
	return out
}

// FaultSpec is one call of a fault scenario and what it is there to show.
type FaultSpec struct {
	Expect string
	Spec   CallSpec
}

// Fault makes the calls at once, each with its spec.Audio of audio (0
// means 12 s), SIGKILLs the server (which: "cloud" or "supernode") 3 s
// after the last became active, and reports the audio gap each callee
// heard. The killed server stays down: call Fault last.
func (l *Lab) Fault(ctx context.Context, which string, calls []FaultSpec) (*FaultReport, error) {
	target := map[string]*proc{FaultCloud: l.relay, FaultSupernode: l.supernode}[which]
	if target == nil {
		return nil, fmt.Errorf("natlab: unknown fault %q (want %q or %q)", which, FaultCloud, FaultSupernode)
	}
	if target.exited() {
		return nil, fmt.Errorf("natlab: %s already down (%v)", target.name, target.waitErr)
	}
	if len(calls) == 0 {
		return nil, errors.New("natlab: a fault needs a call (the lab has no public hosts)")
	}
	for i := range calls {
		if calls[i].Spec.Audio == 0 {
			calls[i].Spec.Audio = faultAudio
		}
		if a := calls[i].Spec.Audio; a < faultKillAfter+2*time.Second {
			return nil, fmt.Errorf("natlab: fault call %s: needs at least %s of audio to kill the %s %s in", calls[i].Spec, faultKillAfter+2*time.Second, which, faultKillAfter)
		}
	}
	rep := &FaultReport{Killed: which, Calls: make([]FaultCall, len(calls))}
	type active struct {
		i    int
		at   time.Time
		call *proc
	}
	actives := make(chan active, len(calls))
	ended := make(chan int, len(calls))
	killed := make(chan struct{}) // closed once the kill is done (or given up)
	results := make([]*callResult, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		rep.Calls[i].Expect = c.Expect
		l.progress("fault: %s (%s), killing the %s %s after the calls are active", c.Spec, c.Expect, which, faultKillAfter)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Calls[i].Call, results[i] = l.call(ctx, c.Spec, func(at time.Time, caller *proc) {
				actives <- active{i, at, caller}
				<-killed
			})
			ended <- i
		}()
	}

	// Every call active (or one ended before it was): kill, 3 s on.
	var killErr error
	var up []active
wait:
	for len(up) < len(calls) {
		select {
		case a := <-actives:
			up = append(up, a)
		case <-ended:
			break wait // a call ended without becoming active
		case <-ctx.Done():
			break wait
		}
	}
	if len(up) == len(calls) {
		select {
		case <-time.After(faultKillAfter):
		case <-ctx.Done():
		}
		if ctx.Err() == nil {
			for _, a := range up {
				lines, _ := a.call.snapshot()
				rep.Calls[a.i].TierAtKill = lastTier(lines)
			}
			killErr = target.kill()
			last := up[len(up)-1].at
			rep.KilledAfterMS = round(float64(time.Since(last).Milliseconds()), 0)
		}
	} else {
		l.progress("fault: not every call became active, nothing killed")
	}
	close(killed)
	wg.Wait()

	for i := range rep.Calls {
		fc := &rep.Calls[i]
		if res := results[i]; res != nil {
			fc.ConcealedMS, fc.ICERestarts = round(res.ConcealedMS, 0), res.ICERestarts
			fc.EndPath = firstNonEmpty(res.PathDetail, "none")
		}
		fc.analyse(fc.Call.recording, reference(len(fc.Call.recording)))
		l.progress("fault: %s", fc.summary(which, rep.KilledAfterMS))
	}
	if killErr != nil {
		return rep, killErr
	}
	return rep, ctx.Err()
}

// analyse finds the longest silent run in the recording and in the
// reference.
func (r *FaultCall) analyse(rec, ref []int16) {
	r.RecordingMS = float64(len(rec)) * 1000 / media.SampleRate
	start, n := longestSilence(rec)
	_, natural := longestSilence(ref)
	r.GapMS, r.GapStartMS, r.NaturalGapMS = float64(n*20), float64(start*20), float64(natural*20)
	heard := 0
	for i := start + n; (i+1)*frame <= len(rec); i++ {
		if rms(rec[i*frame:(i+1)*frame]) >= silenceRMS {
			heard++
		}
	}
	r.HeardAfterMS = float64(heard * 20)
	r.Recovered = heard*20 >= 500 // half a second of sound: not a stray frame
}

// longestSilence returns the first frame and length, in 20 ms frames, of
// the longest run of silent frames.
func longestSilence(s []int16) (start, n int) {
	run := 0
	for i := 0; (i+1)*frame <= len(s); i++ {
		if rms(s[i*frame:(i+1)*frame]) < silenceRMS {
			run++
			if run > n {
				start, n = i-run+1, run
			}
		} else {
			run = 0
		}
	}
	return start, n
}

func rms(s []int16) float64 {
	var sum float64
	for _, v := range s {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(s)))
}

// Held reports whether the call did what it was there to show: an
// unaffected call stayed direct with no gap beyond the signal's own
// pauses (plus a frame or two of jitter); a moving call was on the killed
// tier, came back within 5 s on another one and was heard after.
func (r *FaultCall) Held(killed string) bool {
	if !r.Call.OK {
		return false
	}
	switch r.Expect {
	case ExpectUnaffected:
		return r.TierAtKill == "direct" && r.Call.Path == "direct" && r.GapMS <= r.NaturalGapMS+100
	case ExpectMoves:
		return r.TierAtKill == killed && relayed(r.Call.Path) && r.Call.Path != killed && r.Recovered && r.GapMS < 5000
	}
	return false
}

func (r *FaultCall) summary(killed string, afterMS float64) string {
	if !r.Call.OK && r.RecordingMS == 0 {
		return fmt.Sprintf("call %s → %s failed: %s", r.Call.Caller, r.Call.Callee, r.Call.Error)
	}
	rec := "did not recover"
	if r.Recovered {
		rec = fmt.Sprintf("recovered (%.1f s heard after the gap)", r.HeardAfterMS/1000)
	}
	verdict := "as expected"
	if !r.Held(killed) {
		verdict = "NOT as expected"
	}
	return fmt.Sprintf("%s killed %.1f s into %s → %s%s (expected: %s; %s): on tier %s at the kill, %s at the end; longest gap %.0f ms at %.1f s of the %.1f s recording (the signal's own longest pause %.0f ms); %s; %d ICE restart(s), pair at the end: %s",
		killed, afterMS/1000, r.Call.Caller, r.Call.Callee, pathSuffix(r.Call.ForcedPath), r.Expect, verdict, firstNonEmpty(r.TierAtKill, "unknown"), firstNonEmpty(r.Call.Path, "none"),
		r.GapMS, r.GapStartMS/1000, r.RecordingMS/1000, r.NaturalGapMS, rec, r.ICERestarts, r.EndPath)
}

func pathSuffix(path string) string {
	if path == "" {
		return ""
	}
	return " --path " + path
}

// statsLine matches the per-second line `parley call` prints while media
// flows: "[  3s] supernode | path ...".
var statsLine = regexp.MustCompile(`^\[\s*\d+s\] (\S+) \|`)

// lastTier returns the tier of the last per-second line in lines.
func lastTier(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if m := statsLine.FindStringSubmatch(lines[i]); m != nil {
			return m[1]
		}
	}
	return ""
}
