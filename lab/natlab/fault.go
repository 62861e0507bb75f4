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
	"github.com/parley-net/parley/node"
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
	// calleeEndWait caps the wait for a callee to end a call whose caller
	// died, so that a callee that never does still lets the run finish;
	// calleePoll is how often its control API is asked meanwhile.
	calleeEndWait = 30 * time.Second
	calleePoll    = 100 * time.Millisecond
	// minCorrelation is the audio correlation from which a call counts as
	// carrying the audio sent, as the matrix's calls must.
	minCorrelation = 0.9
)

// The bounds a fault's calls must hold to (issue 9): a call that moves
// is silent for at most MaxMoveGapMS; a callee whose caller died ends the
// call within MaxCalleeEndMS (10 s without hearing the peer, plus slack).
const (
	MaxMoveGapMS   = 3000
	MaxCalleeEndMS = 12000
)

// What a fault call is there to show.
const (
	// ExpectUnaffected: a direct call, which the killed server does not
	// carry; it must go on without a gap.
	ExpectUnaffected = "unaffected"
	// ExpectMoves: a call relayed through the killed server whose policy
	// allows another relay tier; it must move there.
	ExpectMoves = "moves"
	// ExpectCalleeEnds: a call whose caller's daemon is killed; the callee
	// must end it and then take a call from the restarted caller.
	ExpectCalleeEnds = "callee-ends"
)

// FaultReport is what one kill did to the calls running through the lab.
type FaultReport struct {
	// Killed is what was SIGKILLed: "cloud" (the cloud relay),
	// "supernode", or "caller" (each call's calling daemon).
	Killed string `json:"killed"`
	// KilledAfterMS is when the kill came, after the last of the calls
	// became active; 0 when some call never did and nothing was killed.
	KilledAfterMS float64 `json:"killed_after_ms"`
	// Calls are the calls that ran through the kill.
	Calls []FaultCall `json:"calls"`
}

// FaultCall is what happened to one call when the server was killed.
type FaultCall struct {
	// Expect is what the call is there to show: ExpectUnaffected,
	// ExpectMoves or ExpectCalleeEnds.
	Expect string `json:"expect"`
	// Call is the call; its Path is the tier the caller reported at the
	// end.
	Call Pair `json:"call"`
	// CallerHandle and CalleeHandle name the two devices: the types' -a
	// and -b hosts, or spares (<type>-c…) when another call of the fault
	// holds those.
	CallerHandle string `json:"caller_handle"`
	CalleeHandle string `json:"callee_handle"`
	// TierAtKill is the tier the caller last reported before the kill;
	// TierAfter the tier it reported at the end: its summary's, or, when
	// it printed none, its last per-second line after the kill; "none"
	// when that is empty (no pair carried the media at the end).
	TierAtKill string `json:"tier_at_kill"`
	TierAfter  string `json:"tier_after"`
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
	// CalleeEnd is set for the caller fault only; its fields are flat in
	// the JSON.
	*CalleeEnd
}

// CalleeEnd is what a callee did with a call whose caller's daemon was
// SIGKILLed.
type CalleeEnd struct {
	// CalleeEndedMS is the time from the kill to the end of the call as
	// the callee's daemon reports it (its ended_ms, else when natlab saw
	// it ended); -1 when it had not ended 30 s after the kill.
	CalleeEndedMS float64 `json:"callee_ended_ms"`
	// CalleeEndReason is the reason the callee gave; CalleeState its
	// call's state when natlab stopped looking ("ended", or e.g. "active"
	// for a call that never ended).
	CalleeEndReason string `json:"callee_end_reason"`
	CalleeState     string `json:"callee_state"`
	// CalleeAcceptsNewCall: after the wait, the caller's daemon was
	// restarted with the same home and a new call to the callee connected
	// and carried the audio (correlation ≥ 0.9). NewCall is that call.
	CalleeAcceptsNewCall bool  `json:"callee_accepts_new_call"`
	NewCall              *Pair `json:"new_call,omitempty"`
	// CalleeError says why the callee's control API could not be read, if
	// it could not.
	CalleeError string `json:"callee_error,omitempty"`
}

// FaultCalls are the calls a fault is tested with, among those whose
// types are all in types; nil when none of them shows the fault (only an
// unaffected call would run).
//
// For "cloud" and "supernode", the kill of that server (policy P below
// is "cloud,supernode" or "supernode,cloud": the killed tier first, the
// other relay tier allowed):
//   - public → public with --path P, relayed through the server; public
//     hosts signal each other directly, so the kill hits the media path
//     alone. It must move.
//   - a direct call between two hosts of the first of port-restricted,
//     restricted and full-cone in the lab, which must not notice.
//   - symmetric → symmetric, which cannot punch: --path auto for
//     "supernode" (relayed by the supernode, as the NATs require), --path
//     P for "cloud". It must move.
//   - public → port-restricted with --path P: the callee is reached
//     through the supernode's circuit, so under "supernode" the kill
//     takes the call's signalling too. It must move.
//
// For "caller", a direct call between two hosts of the first of
// port-restricted, restricted, full-cone and public in the lab, whose
// caller's daemon is killed: the callee must end the call.
func FaultCalls(types []netlab.NATType, which string) []FaultSpec {
	has := func(ts ...netlab.NATType) bool {
		for _, t := range ts {
			if !slices.Contains(types, t) {
				return false
			}
		}
		return true
	}
	direct := func(candidates ...netlab.NATType) (netlab.NATType, bool) {
		for _, t := range candidates {
			if has(t) {
				return t, true
			}
		}
		return "", false
	}
	var out []FaultSpec
	switch which {
	case FaultCloud, FaultSupernode:
		other := map[string]string{FaultCloud: FaultSupernode, FaultSupernode: FaultCloud}[which]
		policy := which + "," + other
		if has(netlab.Public) {
			out = append(out, FaultSpec{Expect: ExpectMoves, Spec: CallSpec{Caller: netlab.Public, Callee: netlab.Public, Path: policy}})
		}
		if t, ok := direct(netlab.PortRestricted, netlab.Restricted, netlab.FullCone); ok {
			out = append(out, FaultSpec{Expect: ExpectUnaffected, Spec: CallSpec{Caller: t, Callee: t}})
		}
		if has(netlab.Symmetric) {
			sym := CallSpec{Caller: netlab.Symmetric, Callee: netlab.Symmetric}
			if which == FaultCloud {
				sym.Path = policy
			}
			out = append(out, FaultSpec{Expect: ExpectMoves, Spec: sym})
		}
		if has(netlab.Public, netlab.PortRestricted) {
			out = append(out, FaultSpec{Expect: ExpectMoves, Spec: CallSpec{Caller: netlab.Public, Callee: netlab.PortRestricted, Path: policy}})
		}
	case FaultCaller:
		if t, ok := direct(netlab.PortRestricted, netlab.Restricted, netlab.FullCone, netlab.Public); ok {
			out = append(out, FaultSpec{Expect: ExpectCalleeEnds, Spec: CallSpec{Caller: t, Callee: t}})
		}
	}
	if !slices.ContainsFunc(out, func(f FaultSpec) bool { return f.Expect != ExpectUnaffected }) {
		return nil
	}
	return out
}

// faultNeeds says, per fault, which types FaultCalls needs.
var faultNeeds = map[string]string{
	FaultCloud:     "public or symmetric",
	FaultSupernode: "public or symmetric",
	FaultCaller:    "one of port-restricted, restricted, full-cone or public",
}

// FaultSpec is one call of a fault scenario and what it is there to show.
type FaultSpec struct {
	Expect string
	Spec   CallSpec
}

// Fault makes the calls at once, each with its spec.Audio of audio (0
// means 12 s), SIGKILLs what which names 3 s after the last became
// active, and reports the audio gap each callee heard:
//   - "cloud" or "supernode": that server, which stays down (call Fault
//     last);
//   - "caller": each call's calling daemon. Then it watches each callee's
//     control API until its call has ended (at most 30 s), restarts the
//     caller's daemon with the same home and calls the callee again
//     (FaultCall.CalleeEnd).
//
// A device takes one call at a time, so a call whose -a or -b host
// another call of the fault holds gets a spare device of the same type
// (<type>-c…, behind a NAT of its own), added on the first need.
// Long because the fault is one scripted sequence (place the calls, inject
// the fault, watch each call through it, report) over shared devices.
func (l *Lab) Fault(ctx context.Context, which string, calls []FaultSpec) (*FaultReport, error) {
	var server *proc
	switch which {
	case FaultCloud:
		server = l.relay
	case FaultSupernode:
		server = l.supernode
	case FaultCaller:
	default:
		return nil, fmt.Errorf("natlab: unknown fault %q (want %q, %q or %q)", which, FaultCloud, FaultSupernode, FaultCaller)
	}
	if server != nil && server.exited() {
		return nil, fmt.Errorf("natlab: %s already down (%v)", server.name, server.waitErr)
	}
	if len(calls) == 0 {
		return nil, fmt.Errorf("natlab: fault %s needs a call (the lab needs %s)", which, faultNeeds[which])
	}
	for i := range calls {
		if calls[i].Spec.Audio == 0 {
			calls[i].Spec.Audio = faultAudio
		}
		if a := calls[i].Spec.Audio; a < faultKillAfter+2*time.Second {
			return nil, fmt.Errorf("natlab: fault call %s: needs at least %s of audio to kill the %s %s in", calls[i].Spec, faultKillAfter+2*time.Second, which, faultKillAfter)
		}
	}
	devs, err := l.faultDevices(ctx, calls)
	if err != nil {
		return nil, fmt.Errorf("natlab: fault %s: %w", which, err)
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
	results := make([]*node.CallSummary, len(calls))
	victim := "the " + which
	if which == FaultCaller {
		victim = "the caller's daemon"
	}
	var wg sync.WaitGroup
	for i, c := range calls {
		fc := &rep.Calls[i]
		fc.Expect, fc.CallerHandle, fc.CalleeHandle = c.Expect, devs[i][0].handle, devs[i][1].handle
		l.progress("fault: %s (%s → %s, %s), killing %s %s after the calls are active", c.Spec, fc.CallerHandle, fc.CalleeHandle, c.Expect, victim, faultKillAfter)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc.Call, results[i] = l.callBetween(ctx, c.Spec, devs[i][0], devs[i][1], "fault-"+which, func(at time.Time, caller *proc) {
				actives <- active{i, at, caller}
				<-killed
			})
			ended <- i
		}()
	}

	// Every call active (or one ended before it was): kill, 3 s on.
	var killErr error
	var killedAt time.Time
	var up []active
	cli := make([]*proc, len(calls)) // each call's `parley call`, once active
	killLine := make([]int, len(calls))
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
				cli[a.i], killLine[a.i] = a.call, len(lines)
			}
			killedAt = time.Now()
			if server != nil {
				killErr = server.kill()
			} else {
				for i := range calls {
					killErr = errors.Join(killErr, devs[i][0].daemon.kill())
				}
			}
			rep.KilledAfterMS = round(float64(killedAt.Sub(up[len(up)-1].at).Milliseconds()), 0)
		}
	} else {
		l.progress("fault: not every call became active, nothing killed")
	}
	close(killed)

	// A callee is watched from the kill on, beside the calls' own ends.
	ends := make([]CalleeEnd, len(calls))
	if which == FaultCaller && !killedAt.IsZero() {
		for i := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ends[i] = waitCalleeEnd(ctx, devs[i][0].handle, devs[i][1], killedAt)
			}()
		}
	}
	wg.Wait()
	if which == FaultCaller && !killedAt.IsZero() {
		for i := range calls {
			l.progress("fault: %s: the callee's call %s", calls[i].Spec, ends[i].describe())
			l.recall(ctx, calls[i].Spec, devs[i][0], devs[i][1], &ends[i])
			rep.Calls[i].CalleeEnd = &ends[i]
		}
	}

	for i := range rep.Calls {
		fc := &rep.Calls[i]
		var after string
		if cli[i] != nil {
			lines, _ := cli[i].snapshot()
			after = lastTier(lines[killLine[i]:])
		}
		if res := results[i]; res != nil {
			fc.ConcealedMS, fc.ICERestarts = round(res.ConcealedMS, 0), res.ICERestarts
			fc.EndPath = firstNonEmpty(res.PathDetail, "none")
			after = res.Tier // "" in a summary: no pair carried the call at the end
		}
		fc.TierAfter = firstNonEmpty(after, "none")
		fc.analyse(fc.Call.recording, reference(len(fc.Call.recording)))
		l.progress("fault: %s", fc.summary(which, rep.KilledAfterMS))
	}
	if killErr != nil {
		return rep, killErr
	}
	return rep, ctx.Err()
}

// faultDevices picks each call's caller and callee: its types' -a and -b
// hosts, or spares where an earlier call of the fault holds those.
func (l *Lab) faultDevices(ctx context.Context, calls []FaultSpec) ([][2]*device, error) {
	type slot struct {
		t netlab.NATType
		i int // 0: -a, 1: -b, 2 on: spare i-2
	}
	taken := map[slot]bool{}
	spares := map[netlab.NATType]int{}
	pick := func(t netlab.NATType, def int) slot {
		s := slot{t, def}
		for n := 2; taken[s]; n++ {
			s = slot{t, n}
		}
		taken[s] = true
		if s.i >= 2 {
			spares[t] = max(spares[t], s.i-1)
		}
		return s
	}
	slots := make([][2]slot, len(calls))
	for i, c := range calls {
		for _, t := range []netlab.NATType{c.Spec.Caller, c.Spec.Callee} {
			if _, ok := l.devices[t]; !ok {
				return nil, fmt.Errorf("call %s: types must be among %v", c.Spec, l.opts.Types)
			}
		}
		slots[i] = [2]slot{pick(c.Spec.Caller, 0), pick(c.Spec.Callee, 1)}
	}
	for _, t := range l.opts.Types { // in order, for the names
		if n := spares[t]; n > 0 {
			if _, err := l.sparesOf(ctx, t, n); err != nil {
				return nil, err
			}
		}
	}
	out := make([][2]*device, len(calls))
	for i, pair := range slots {
		for j, s := range pair {
			if s.i < 2 {
				out[i][j] = l.devices[s.t][s.i]
			} else {
				out[i][j] = l.spares[s.t][s.i-2]
			}
		}
	}
	return out, nil
}

// waitCalleeEnd asks the callee's control API, from the kill of the
// caller's daemon on and for at most calleeEndWait, until its call from
// caller has ended.
func waitCalleeEnd(ctx context.Context, caller string, callee *device, killedAt time.Time) CalleeEnd {
	ce := CalleeEnd{CalleeEndedMS: -1}
	deadline := killedAt.Add(calleeEndWait)
	for {
		calls, err := daemonCalls(ctx, callee.home)
		now := time.Now()
		switch c, found := incomingFrom(calls, caller, killedAt.UnixMilli()); {
		case err != nil:
			ce.CalleeError = err.Error()
		case !found:
			ce.CalleeError = fmt.Sprintf("no call from %s in the callee's list", caller)
		default:
			ce.CalleeError, ce.CalleeState = "", c.State
			if c.State == callEnded {
				// In the daemon's milliseconds when it says when.
				at := now.UnixMilli()
				if c.EndedMS > 0 {
					at = c.EndedMS
				}
				ce.CalleeEndedMS = float64(max(0, at-killedAt.UnixMilli()))
				ce.CalleeEndReason = c.Reason
				return ce
			}
		}
		if now.After(deadline) {
			return ce
		}
		select {
		case <-ctx.Done():
			ce.CalleeError = ctx.Err().Error()
			return ce
		case <-time.After(calleePoll):
		}
	}
}

// recall restarts the caller's daemon with its home and calls the callee
// again, with the lab's audio length, to see whether the callee takes new
// calls.
func (l *Lab) recall(ctx context.Context, spec CallSpec, caller, callee *device, ce *CalleeEnd) {
	if ctx.Err() != nil {
		return
	}
	spec.Audio = l.opts.Audio
	p := Pair{Caller: string(spec.Caller), Callee: string(spec.Callee), Profile: spec.Profile, ForcedPath: spec.Path}
	start := time.Now()
	err := l.startDaemon(caller, "daemon-"+caller.handle+"-restarted")
	if err == nil {
		err = waitReady(ctx, []*device{caller})
	}
	if err == nil {
		err = waitAPI(ctx, caller.home, 5*time.Second)
	}
	if err != nil {
		p.Error = fmt.Sprintf("restart the caller %s: %v", caller.handle, err)
		ce.NewCall = &p
		l.progress("fault: %s", p.Error)
		return
	}
	l.progress("fault: caller %s restarted in %.1f s; calling %s again", caller.handle, time.Since(start).Seconds(), callee.handle)
	p, _ = l.callBetween(ctx, spec, caller, callee, "after-caller-restart", nil)
	ce.NewCall = &p
	ce.CalleeAcceptsNewCall = p.OK && p.AudioCorrelation >= minCorrelation
}

// describe says in words what the callee did.
func (ce *CalleeEnd) describe() string {
	switch {
	case ce.CalleeEndedMS >= 0:
		return fmt.Sprintf("ended %.1f s after the kill (reason %q)", ce.CalleeEndedMS/1000, ce.CalleeEndReason)
	case ce.CalleeError != "":
		return fmt.Sprintf("was not seen to end within %s (%s)", calleeEndWait, ce.CalleeError)
	default:
		return fmt.Sprintf("had not ended %s after the kill (state %s)", calleeEndWait, firstNonEmpty(ce.CalleeState, "unknown"))
	}
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

// Held reports whether the call did what it was there to show:
//   - unaffected: it was not on the killed tier, stayed on its path, and
//     had no gap beyond the signal's own pauses (plus a frame or two of
//     jitter);
//   - moves: it was on the killed tier, ended on the other relay tier,
//     and was heard again after a gap of at most MaxMoveGapMS. The
//     caller's own verdict (Call.OK) is not asked for: its summary may
//     rightly call a call with a gap degraded;
//   - callee-ends: the callee ended it within MaxCalleeEndMS of the kill
//     and then took a call from the restarted caller, with audio.
func (r *FaultCall) Held(killed string) bool {
	switch r.Expect {
	case ExpectUnaffected:
		// Not carried by the killed server, it must not notice. It is
		// placed to go direct; ICE may settle on the other relay tier
		// instead (the NAT matrix is where every punchable pair must be
		// direct), which is still a path the kill does not touch.
		carried := r.TierAtKill == killed || r.TierAtKill == "" || r.TierAtKill == "none"
		return r.Call.OK && !carried && r.Call.Path == r.TierAtKill && r.GapMS <= r.NaturalGapMS+100
	case ExpectMoves:
		return r.TierAtKill == killed && relayed(r.TierAfter) && r.TierAfter != killed && r.Recovered && r.GapMS <= MaxMoveGapMS
	case ExpectCalleeEnds:
		return r.CalleeEnd != nil && r.CalleeEndedMS >= 0 && r.CalleeEndedMS <= MaxCalleeEndMS && r.CalleeAcceptsNewCall
	}
	return false
}

// summary is the fault call in one line of text.
func (r *FaultCall) summary(killed string, afterMS float64) string {
	verdict := "as expected"
	if !r.Held(killed) {
		verdict = "NOT as expected"
	}
	head := fmt.Sprintf("%s killed %.1f s into %s → %s%s [%s → %s] (expected: %s; %s)",
		killed, afterMS/1000, r.Call.Caller, r.Call.Callee, pathSuffix(r.Call.ForcedPath), r.CallerHandle, r.CalleeHandle, r.Expect, verdict)
	if r.CalleeEnd != nil {
		out := fmt.Sprintf("%s: on tier %s at the kill; the callee's call %s", head, firstNonEmpty(r.TierAtKill, "unknown"), r.describe())
		switch nc := r.NewCall; {
		case nc == nil:
			out += "; the caller was not restarted"
		case r.CalleeAcceptsNewCall:
			out += fmt.Sprintf("; a new call from the restarted caller connected (%s, setup %.0f ms, correlation %.3f)", nc.Path, nc.SetupMS, nc.AudioCorrelation)
		case nc.OK:
			out += fmt.Sprintf("; a new call from the restarted caller connected without the audio sent (correlation %.3f)", nc.AudioCorrelation)
		default:
			out += fmt.Sprintf("; a new call from the restarted caller failed: %s", nc.Error)
		}
		return out
	}
	if !r.Call.OK && r.RecordingMS == 0 {
		return fmt.Sprintf("%s: the call failed: %s", head, r.Call.Error)
	}
	rec := "did not recover"
	if r.Recovered {
		rec = fmt.Sprintf("recovered (%.1f s heard after the gap)", r.HeardAfterMS/1000)
	}
	out := fmt.Sprintf("%s: on tier %s at the kill, %s after; longest gap %.0f ms at %.1f s of the %.1f s recording (the signal's own longest pause %.0f ms); %s; %d ICE restart(s), pair at the end: %s",
		head, firstNonEmpty(r.TierAtKill, "unknown"), r.TierAfter,
		r.GapMS, r.GapStartMS/1000, r.RecordingMS/1000, r.NaturalGapMS, rec, r.ICERestarts, r.EndPath)
	if r.Call.Error != "" {
		out += "; the call: " + r.Call.Error
	}
	return out
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
