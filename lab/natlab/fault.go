package natlab

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"time"

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

// FaultReport is what happened to a call whose relay was killed.
type FaultReport struct {
	// Killed is the server SIGKILLed: "cloud" (the cloud relay) or
	// "supernode".
	Killed string `json:"killed"`
	// Call is the call, forced onto the killed server's tier with --path;
	// its Path is the tier the caller reported at the end.
	Call Pair `json:"call"`
	// KilledAfterMS is when the kill came, after the call became active,
	// and TierAtKill the tier the caller last reported before it.
	KilledAfterMS float64 `json:"killed_after_ms"`
	TierAtKill    string  `json:"tier_at_kill"`
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

// Fault makes the call spec with --path set to which ("cloud" or
// "supernode") and spec.Audio of audio (0 means 12 s), SIGKILLs that
// server 3 s after the call became active, and reports the audio gap the
// callee heard. The killed server stays down: call Fault last.
func (l *Lab) Fault(ctx context.Context, which string, spec CallSpec) (*FaultReport, error) {
	target := map[string]*proc{FaultCloud: l.relay, FaultSupernode: l.supernode}[which]
	if target == nil {
		return nil, fmt.Errorf("natlab: unknown fault %q (want %q or %q)", which, FaultCloud, FaultSupernode)
	}
	if target.exited() {
		return nil, fmt.Errorf("natlab: %s already down (%v)", target.name, target.waitErr)
	}
	spec.Path = which
	if spec.Audio == 0 {
		spec.Audio = faultAudio
	}
	if spec.Audio < faultKillAfter+2*time.Second {
		return nil, fmt.Errorf("natlab: fault call of %s: needs at least %s of audio to kill the %s %s in", spec.Audio, faultKillAfter+2*time.Second, which, faultKillAfter)
	}
	rep := &FaultReport{Killed: which}
	var killErr error
	l.progress("fault: %s, killing the %s %s after the call is active", spec, which, faultKillAfter)
	p, res := l.call(ctx, spec, func(active time.Time, caller *proc) {
		select {
		case <-time.After(faultKillAfter):
		case <-ctx.Done():
			return
		}
		lines, _ := caller.snapshot()
		killErr = target.kill()
		rep.KilledAfterMS = round(float64(time.Since(active).Milliseconds()), 0)
		rep.TierAtKill = lastTier(lines)
	})
	rep.Call = p
	if res != nil {
		rep.ConcealedMS, rep.ICERestarts = round(res.ConcealedMS, 0), res.ICERestarts
		rep.EndPath = firstNonEmpty(res.PathDetail, "none")
	}
	if killErr != nil {
		return rep, killErr
	}
	if rep.KilledAfterMS == 0 {
		l.progress("fault: the call never became active, nothing killed: %s", p.Error)
	}
	rep.analyse(p.recording, reference(len(p.recording)))
	l.progress("fault: %s", rep.summary())
	return rep, ctx.Err()
}

// analyse finds the longest silent run in the recording and in the
// reference.
func (r *FaultReport) analyse(rec, ref []int16) {
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

func (r *FaultReport) summary() string {
	if !r.Call.OK && r.RecordingMS == 0 {
		return fmt.Sprintf("call %s → %s failed: %s", r.Call.Caller, r.Call.Callee, r.Call.Error)
	}
	rec := "did not recover"
	if r.Recovered {
		rec = fmt.Sprintf("recovered (%.1f s heard after the gap)", r.HeardAfterMS/1000)
	}
	return fmt.Sprintf("%s killed %.1f s into a %s → %s call forced onto it (on tier %s): longest gap %.0f ms at %.1f s of the %.1f s recording (the signal's own longest pause %.0f ms); %s; %d ICE restart(s), pair at the end: %s (tier reported: %s)",
		r.Killed, r.KilledAfterMS/1000, r.Call.Caller, r.Call.Callee, firstNonEmpty(r.TierAtKill, "unknown"), r.GapMS, r.GapStartMS/1000, r.RecordingMS/1000, r.NaturalGapMS, rec, r.ICERestarts, r.EndPath, r.Call.Path)
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
