package natlab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node"
)

// Matrix is what RunMatrix found; its JSON form is what `parley lab nat
// --json` prints.
type Matrix struct {
	Types []string `json:"types"`
	// LossPct is Options.LossPct: the random UDP loss at each caller's NAT.
	LossPct int          `json:"loss_pct,omitempty"`
	Pairs   []Pair       `json:"pairs"`
	Fault   *FaultReport `json:"fault,omitempty"`
	// Summary sums up the calls with a NAT on either side.
	Summary *Summary `json:"summary,omitempty"`
	// Dir is where homes, recordings and logs were kept (only when
	// Options.Dir named it).
	Dir string `json:"dir,omitempty"`
}

// Pair is the outcome of one call.
type Pair struct {
	Caller string `json:"caller"`
	Callee string `json:"callee"`
	// Profile and ForcedPath repeat the CallSpec when it set them.
	Profile    string `json:"profile,omitempty"`
	ForcedPath string `json:"forced_path,omitempty"`
	// OK: the call connected, carried audio for its whole duration and
	// the callee's recording exists.
	OK bool `json:"ok"`
	// Path is the tier that carried the call: "direct", "supernode" or
	// "cloud", as the caller reported it.
	Path string `json:"path"`
	// Candidate is the ICE candidate type of the less direct end ("host",
	// "srflx", "prflx", "relay").
	Candidate string `json:"candidate,omitempty"`
	// PathDetail is the candidate pair at the end, as the caller reported
	// it: "relay 203.0.113.10:61022 -> host 198.51.100.11:54314 (udp) via …".
	PathDetail string  `json:"path_detail,omitempty"`
	SetupMS    float64 `json:"setup_ms"`
	// FinalPathMS is when the tier that carried the call at the end took
	// over (since the call began): SetupMS, or later when the call started
	// on a relay and moved to a direct pair found after it. Switches
	// counts every move to another pair, within a tier too (from a
	// peer-reflexive to a server-reflexive candidate of the same NAT
	// binding, say); FirstPath is the first pair's tier when the tier
	// changed.
	FinalPathMS float64 `json:"final_path_ms,omitempty"`
	Switches    int     `json:"switches"`
	FirstPath   string  `json:"first_path,omitempty"`
	// DirectAfterMS repeats CallSpec.DirectAfter; SwitchGapMS is then the
	// longest silence in the callee's recording beyond the longest of the
	// audio sent (its natural pauses), in 20 ms frames: what moving from
	// the relay to the direct pair cost.
	DirectAfterMS float64 `json:"direct_after_ms,omitempty"`
	SwitchGapMS   float64 `json:"switch_gap_ms,omitempty"`
	// AudioCorrelation compares the speech-like signal the caller sent
	// with what the callee recorded: the energy-weighted mean of the peak
	// normalised cross-correlations of half-second segments, each aligned
	// on its own near the overall alignment. WholeCorrelation is the peak
	// for one alignment of the whole recording, which a jitter buffer
	// shifting playout by a frame mid-call brings down although the audio
	// is intact.
	AudioCorrelation float64 `json:"audio_correlation"`
	WholeCorrelation float64 `json:"whole_correlation"`
	RTTMS            float64 `json:"rtt_ms,omitempty"`
	LossPct          float64 `json:"loss_pct,omitempty"`
	MOS              float64 `json:"mos,omitempty"`
	// ConcealedMS is the audio the caller's playout had to make up by
	// loss concealment over the call (lost or late packets that neither
	// RED nor in-band FEC recovered), as the caller reported it.
	ConcealedMS float64 `json:"concealed_ms"`
	// Error says why OK is false.
	Error string `json:"error,omitempty"`

	// Logs of the two daemons, the caller's CLI output and the callee's
	// recording, for diagnosis.
	CallerLog, CalleeLog, CallOutput, Recording string `json:"-"`
	// recording is the callee's WAV, kept for the fault analysis.
	recording []int16
}

// maxLag bounds the correlation's search for the delay between the caller
// starting to send and the callee's first decoded frame; each half-second
// segment is then aligned near that delay (media.SegmentCorrelation), since
// an adaptive jitter buffer moves playout by a frame or two.
const (
	maxLag = 3 * media.SampleRate
	// speechSeed is the seed of media.SpeechLikeSource that `--speech`
	// sends (node.AudioSpec.Open).
	speechSeed = 1
)

// Call makes one call from spec.Caller's -a host to spec.Callee's -b host
// with `parley call --speech --json` and judges it: the caller's JSON and
// the callee's recording. A call that fails is reported in the Pair.
func (l *Lab) Call(ctx context.Context, spec CallSpec) Pair {
	p, _ := l.call(ctx, spec, nil)
	if p.OK {
		moved := ""
		if p.FirstPath != "" {
			moved = fmt.Sprintf(", moved from %s at %.0f ms", p.FirstPath, p.FinalPathMS)
		}
		if spec.DirectAfter != 0 {
			moved += fmt.Sprintf(", longest gap %.0f ms", p.SwitchGapMS)
		}
		l.progress("%s: %s (%s), setup %.0f ms%s, correlation %.3f", spec, p.Path, p.Candidate, p.SetupMS, moved, p.AudioCorrelation)
	} else {
		l.progress("%s: FAIL: %s", spec, p.Error)
	}
	return p
}

// call runs the call from spec.Caller's -a host to spec.Callee's -b host;
// during it, duringCall (if not nil) runs once the caller reports the
// call active, with the time it did and the running `parley call`.
func (l *Lab) call(ctx context.Context, spec CallSpec, duringCall func(active time.Time, caller *proc)) (Pair, *node.CallSummary) {
	from, okA := l.devices[spec.Caller]
	to, okB := l.devices[spec.Callee]
	if !okA || !okB {
		p := Pair{Caller: string(spec.Caller), Callee: string(spec.Callee), Profile: spec.Profile, ForcedPath: spec.Path}
		p.Error = fmt.Sprintf("call %s: types must be among %v", spec, l.opts.Types)
		return p, nil
	}
	return l.callBetween(ctx, spec, from[0], to[1], "", duringCall)
}

// callBetween runs the call of spec between two given devices (of
// spec's types), as Lab.call does. A non-empty tag goes into the names of
// the call's files, so that two calls between the same devices keep
// theirs apart.
// Long because one call's life in the lab (start both daemons, call, follow,
// collect the recording and statistics) shares its processes and files.
func (l *Lab) callBetween(ctx context.Context, spec CallSpec, caller, callee *device, tag string, duringCall func(active time.Time, caller *proc)) (Pair, *node.CallSummary) {
	if spec.Audio == 0 {
		spec.Audio = DefaultAudio
	}
	p := Pair{Caller: string(spec.Caller), Callee: string(spec.Callee), Profile: spec.Profile, ForcedPath: spec.Path}
	p.CallerLog, p.CalleeLog = caller.daemon.logPath, callee.daemon.logPath
	for _, d := range []*device{caller, callee} {
		if d.daemon.exited() {
			p.Error = fmt.Sprintf("daemon %s exited (%v); see %s", d.handle, d.daemon.waitErr, d.daemon.logPath)
			return p, nil
		}
	}
	// The daemon truncates its recording at every call; remove the last
	// one so an old file is never judged.
	if err := os.Remove(callee.heard); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.Error = err.Error()
		return p, nil
	}
	args := []string{"--home", caller.home, "call", callee.handle, "--speech", "--duration", spec.Audio.String(), "--json"}
	if spec.Path != "" {
		args = append(args, "--path", spec.Path)
	}
	if spec.Profile != "" {
		args = append(args, "--profile", spec.Profile)
	}
	cctx, cancel := context.WithTimeout(ctx, spec.Audio+callSlack)
	defer cancel()
	cmd := exec.CommandContext(cctx, l.binary, args...)
	cmd.WaitDelay = 2 * time.Second
	name := fmt.Sprintf("call-%s-%s", caller.handle, callee.handle)
	if spec.Path != "" {
		name += "-path-" + spec.Path
	}
	if spec.Profile != "" {
		name += "-" + spec.Profile
	}
	if tag != "" {
		name += "-" + tag
	}
	if spec.DirectAfter != 0 {
		p.DirectAfterMS = float64(spec.DirectAfter.Milliseconds())
		unblock, err := l.net.BlockUDP(ctx, caller.host, callee.host)
		if err != nil {
			p.Error = err.Error()
			return p, nil
		}
		defer unblock(context.WithoutCancel(ctx))
		lift := time.AfterFunc(spec.DirectAfter, func() {
			if err := unblock(context.WithoutCancel(ctx)); err != nil {
				l.progress("%s: %v", spec, err)
			}
		})
		defer lift.Stop()
	}
	start := time.Now()
	cp, err := startProc(cmd, l.dir, name)
	if err != nil {
		p.Error = err.Error()
		return p, nil
	}
	p.CallOutput = cp.outPath
	if duringCall != nil {
		if _, _, err := cp.waitLine(cctx, spec.Audio+callSlack, `"active"`, func(s string) bool { return strings.HasPrefix(s, "active") }); err == nil {
			duringCall(time.Now(), cp)
		}
	}
	<-cp.done
	res := lastJSON(cp)
	if res == nil {
		msg := strings.TrimSpace(tailFile(cp.logPath, 3))
		if msg == "" {
			msg = "no JSON result"
		}
		p.Error = fmt.Sprintf("parley call exited (%v) after %.1f s: %s", cp.waitErr, time.Since(start).Seconds(), oneLine(msg))
		if ctx.Err() != nil {
			p.Error = ctx.Err().Error()
		}
		return p, nil
	}
	p.Path, p.Candidate, p.PathDetail = res.Tier, res.Path, res.PathDetail
	p.SetupMS, p.RTTMS, p.LossPct, p.MOS = round(res.SetupMS, 1), round(res.RTTMS, 2), round(res.LossPct, 2), round(res.MOS, 2)
	p.ConcealedMS = round(res.ConcealedMS, 0)
	p.FinalPathMS, p.Switches, p.FirstPath = finalPath(res)
	switch {
	case !res.OK:
		p.Error = firstNonEmpty(res.Why, res.Reason, "call not connected")
	case cp.waitErr != nil:
		p.Error = fmt.Sprintf("parley call: %v: %s", cp.waitErr, oneLine(tailFile(cp.logPath, 3)))
	}
	kept := filepath.Join(l.dir, name+".wav")
	rec, err := waitRecording(ctx, callee.heard)
	if err != nil {
		if p.Error == "" {
			p.Error = fmt.Sprintf("callee %s: %v", callee.handle, err)
		}
		// A callee that never ended the call never closed its recording
		// either (a fault can do that). What it wrote, cut to the audio
		// the caller sent, still shows what was heard.
		raw, part := readUnclosedWAV(callee.heard, int(spec.Audio.Seconds()*media.SampleRate))
		if len(part) == 0 {
			return p, res
		}
		p.Error += fmt.Sprintf(" (judged on the %.1f s it had written)", float64(len(part))/media.SampleRate)
		if os.WriteFile(kept, raw, 0o644) == nil {
			p.Recording = kept
		}
		rec = part
	} else if err := os.Rename(callee.heard, kept); err == nil {
		// Keep it next to the call's output for a listen or a second look.
		p.Recording = kept
	}
	p.recording = rec
	ref := reference(len(rec) + maxLag)
	seg, whole := correlate(ref, rec)
	p.AudioCorrelation, p.WholeCorrelation = round(seg, 3), round(whole, 3)
	if spec.DirectAfter != 0 {
		p.SwitchGapMS = switchGap(rec, ref, int(spec.Audio.Seconds()*media.SampleRate))
	}
	p.OK = p.Error == ""
	return p, res
}

// lastJSON returns the last stdout line of p that parses as a call
// result.
func lastJSON(p *proc) *node.CallSummary {
	lines, _ := p.snapshot()
	for i := len(lines) - 1; i >= 0; i-- {
		s := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(s, "{") {
			continue
		}
		var r node.CallSummary
		if json.Unmarshal([]byte(s), &r) == nil {
			return &r
		}
	}
	return nil
}

// waitRecording waits (bounded) until the WAV at path is complete, which
// is when its writer has closed it: media.WAVSink writes placeholder sizes
// and fixes them on Close. Then it reads the samples.
func waitRecording(ctx context.Context, path string) ([]int16, error) {
	deadline := time.Now().Add(recordingTimeout)
	for {
		if complete(path) {
			src, err := media.OpenWAVSource(path)
			if err != nil {
				return nil, err
			}
			defer src.Close()
			return media.ReadAll(src, math.MaxInt32)
		}
		if time.Now().After(deadline) {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("no recording: %w", err)
			}
			return nil, fmt.Errorf("recording %s not closed within %s of the hangup", path, recordingTimeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readUnclosedWAV reads a WAV file its writer has not closed, whose
// header still holds placeholder sizes: up to limit 16-bit samples after
// the canonical 44-byte header. It returns the file's bytes so far (for a
// copy) and the samples; nothing when the file is not such a WAV.
func readUnclosedWAV(path string, limit int) (raw []byte, samples []int16) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 44 || string(b[:4]) != "RIFF" || string(b[36:40]) != "data" {
		return nil, nil
	}
	data := b[44:]
	n := min(len(data)/2, limit)
	samples = make([]int16, n)
	for i := range samples {
		samples[i] = int16(binary.LittleEndian.Uint16(data[2*i:]))
	}
	return b, samples
}

// complete reports whether the canonical 44-byte WAV header at path
// records the file's actual size.
func complete(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 44 || string(b[:4]) != "RIFF" || string(b[36:40]) != "data" {
		return false
	}
	riff := binary.LittleEndian.Uint32(b[4:8])
	data := binary.LittleEndian.Uint32(b[40:44])
	return data > 0 && int(riff) == len(b)-8 && int(data) == len(b)-44
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// relayed reports whether a tier is one of the relayed ones.
func relayed(tier string) bool { return tier == FaultCloud || tier == FaultSupernode }

// reference returns the first n samples of what `parley call --speech`
// sends.
func reference(n int) []int16 {
	ref, _ := media.ReadAll(media.SpeechLikeSource(speechSeed), n)
	return ref
}

// correlate returns the segment correlation (see Pair.AudioCorrelation)
// of received against sent, and the whole-recording one.
func correlate(sent, received []int16) (segments, whole float64) {
	return media.SegmentCorrelation(sent, received, maxLag)
}

// finalPath reads the pairs a call used: when the final tier took over,
// how many times the call moved and, when the tier changed, the first one.
func finalPath(res *node.CallSummary) (finalMS float64, switches int, first string) {
	finalMS = res.SetupMS
	if len(res.Paths) == 0 {
		return round(finalMS, 1), 0, ""
	}
	last := res.Paths[len(res.Paths)-1].Tier
	for i := len(res.Paths) - 1; i >= 0 && res.Paths[i].Tier == last; i-- {
		if i > 0 && res.Paths[i-1].Tier != last {
			finalMS = max(res.Paths[i].AtMS, res.SetupMS)
			first = res.Paths[0].Tier
		}
	}
	return round(finalMS, 1), len(res.Paths) - 1, first
}

// switchGap is the longest silence of the recording's first n samples
// from its first sound on (the audio sent, not the quiet before the
// hangup), beyond the longest natural pause of the audio sent, in ms.
func switchGap(rec, ref []int16, n int) float64 {
	first := 0
	for first*frame+frame <= len(rec) && rms(rec[first*frame:(first+1)*frame]) < silenceRMS {
		first++
	}
	heard := rec[first*frame : min(len(rec), first*frame+n)]
	_, gap := longestSilence(heard)
	_, natural := longestSilence(ref[:min(len(ref), n)])
	return float64(max(gap-natural, 0) * 20)
}
