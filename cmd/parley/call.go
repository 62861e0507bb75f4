package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/node"
)

func sourceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Float64Flag{Name: "tone", Usage: "send a sine tone of `HZ`"},
		&cli.StringFlag{Name: "in", Usage: "send a WAV `FILE` (any rate and channels; resampled to 48 kHz mono)"},
		&cli.BoolFlag{Name: "speech", Usage: "send a speech-like test signal"},
		&cli.BoolFlag{Name: "mic", Usage: "send the microphone (needs a build with -tags malgo)"},
	}
}

func sinkFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "out", Usage: "write what you hear to a WAV `FILE`"},
		&cli.BoolFlag{Name: "speaker", Usage: "play what you hear (needs a build with -tags malgo)"},
		&cli.StringFlag{Name: "record", Usage: "write the received Opus stream to an Ogg Opus `FILE`"},
	}
}

func abs(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

func audioSpec(c *cli.Context) (node.AudioSpec, error) {
	a := node.AudioSpec{Tone: c.Float64("tone"), Speech: c.Bool("speech"), Mic: c.Bool("mic"), Speaker: c.Bool("speaker")}
	var err error
	for _, p := range []struct {
		dst  *string
		flag string
	}{{&a.In, "in"}, {&a.Out, "out"}, {&a.Record, "record"}} {
		if *p.dst, err = abs(c.String(p.flag)); err != nil {
			return a, err
		}
	}
	return a, nil
}

func callCmd() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "call a handle: every device rings, the first to answer gets the call",
		ArgsUsage: "HANDLE",
		Flags: append(append(sourceFlags(), sinkFlags()...),
			&cli.DurationFlag{Name: "duration", Usage: "hang up this long after the call connects (0: until Ctrl-C or the other side hangs up)"},
			&cli.StringFlag{Name: "path", Usage: "media path for this call: auto (direct, supernode, cloud), or tiers in the order preferred, such as supernode,cloud; one tier forces it (default: the daemon's)"},
			&cli.StringFlag{Name: "profile", Usage: "desktop or mobile for this call (default: the daemon's)"},
			&cli.BoolFlag{Name: "json", Usage: "end with one JSON line summing the call up"}),
		Action: func(c *cli.Context) error {
			h, err := oneArg(c, "HANDLE")
			if err != nil {
				return err
			}
			spec, err := audioSpec(c)
			if err != nil {
				return err
			}
			cl, err := dial(c)
			if err != nil {
				return err
			}
			ci, err := cl.Call(c.Context, h, spec, c.String("path"), c.String("profile"))
			if err != nil {
				return err
			}
			fmt.Printf("calling %s (call %s)\n", h, ci.ID)
			var sum *node.CallSummary
			if c.Bool("json") {
				sum = &node.CallSummary{ID: ci.ID}
			}
			err = followCall(cl, ci.ID, c.Duration("duration"), sum)
			if sum != nil {
				json.NewEncoder(os.Stdout).Encode(sum)
			}
			return err
		},
	}
}

func answerCmd() *cli.Command {
	return &cli.Command{
		Name:      "answer",
		Usage:     "answer a ringing call (the only one, or by ID) and follow it",
		ArgsUsage: "[CALL-ID]",
		Flags: append(append(sourceFlags(), sinkFlags()...),
			&cli.BoolFlag{Name: "detach", Usage: "return once answered instead of following the call"},
			&cli.DurationFlag{Name: "duration", Usage: "hang up this long after answering (0: until Ctrl-C or the other side hangs up)"}),
		Action: func(c *cli.Context) error {
			spec, err := audioSpec(c)
			if err != nil {
				return err
			}
			cl, err := dial(c)
			if err != nil {
				return err
			}
			ci, err := cl.CallVerb(c.Context, "answer", c.Args().First(), spec)
			if err != nil {
				return err
			}
			fmt.Printf("answered %s from %s\n", ci.ID, callerLabel(ci))
			if c.Bool("detach") {
				return nil
			}
			return followCall(cl, ci.ID, c.Duration("duration"), nil)
		},
	}
}

func simpleCallVerb(verb, usage string) *cli.Command {
	return &cli.Command{
		Name:      verb,
		Usage:     usage,
		ArgsUsage: "[CALL-ID]",
		Action: func(c *cli.Context) error {
			cl, err := dial(c)
			if err != nil {
				return err
			}
			ci, err := cl.CallVerb(c.Context, verb, c.Args().First(), node.AudioSpec{})
			if err != nil {
				return err
			}
			fmt.Printf("%s: call %s with %s %s\n", verb, ci.ID, callerLabel(ci), ci.State)
			return nil
		},
	}
}

func callsCmd() *cli.Command {
	return &cli.Command{
		Name:  "calls",
		Usage: "list current and recent calls",
		Action: func(c *cli.Context) error {
			cl, err := dial(c)
			if err != nil {
				return err
			}
			list, err := cl.Calls(c.Context)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Println("no calls")
			}
			for _, ci := range list {
				line := fmt.Sprintf("%s  %-8s %-9s %-10s %s", ci.ID, ci.Direction, callerLabel(&ci), ci.State, time.UnixMilli(ci.StartedMS).Format("15:04:05"))
				if ci.Reason != "" {
					line += "  (" + ci.Reason + ")"
				}
				fmt.Println(line)
			}
			return nil
		},
	}
}

// followCall prints a call's state changes and, every second while it has
// media, its path and quality, until it ends. Ctrl-C hangs up; so does the
// end of duration once the call is active. With sum it also fills in and
// judges the call's summary.
func followCall(cl *node.Client, id string, duration time.Duration, sum *node.CallSummary) (err error) {
	ctx, stop := signalContext()
	defer stop()
	states := make(chan node.CallInfo, 16)
	evctx, cancelEv := context.WithCancel(context.Background())
	defer cancelEv()
	go cl.Events(evctx, func(e node.Event) error {
		if e.Type == "call" && e.Call.ID == id {
			states <- *e.Call
		}
		return nil
	})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	f := &callFollower{duration: duration, sum: sum, start: time.Now()}
	if sum != nil {
		defer func() { sum.Judge(err, f.activeMS) }()
	}
	for {
		select {
		case ci := <-states:
			if done, err := f.show(ci); done {
				return err
			}
		case <-tick.C:
			ci, err := cl.CallInfo(context.Background(), id)
			if err != nil {
				return err
			}
			if done, err := f.show(*ci); done {
				return err
			}
			f.stats(ci)
		case <-f.hangupAt:
			f.hangupAt = nil
			if _, err := cl.CallVerb(context.Background(), "hangup", id, node.AudioSpec{}); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
		case <-ctx.Done():
			// Best effort: the call may have ended on its own meanwhile.
			_, _ = cl.CallVerb(context.Background(), "hangup", id, node.AudioSpec{})
			fmt.Println("hung up")
			return nil
		}
	}
}

// callFollower is what followCall remembers of the call between updates.
type callFollower struct {
	duration    time.Duration
	sum         *node.CallSummary // nil without --json
	activeMS    float64           // how long the call had been active at the last statistics
	start       time.Time
	hangupAt    <-chan time.Time // fires duration after the call became active
	last        string           // the state printed last
	wasActive   bool
	rang        int // ringing devices printed so far
	activeSince time.Time
	pathsShown  int // media paths printed so far
}

// show prints what changed in ci, and says whether the call has ended
// (with an error when an outgoing call ended before it was connected).
func (f *callFollower) show(ci node.CallInfo) (ended bool, err error) {
	if line := ringLine(&f.rang, ci); line != "" {
		fmt.Println(line)
	}
	if ci.State == f.last {
		return false, nil
	}
	f.last = ci.State
	switch ci.State {
	case node.CallRinging:
		if ci.DevicesRang == 0 {
			f.last = ""
		}
	case node.CallConnecting:
		fmt.Printf("connecting to device %s\n", ci.Device)
	case node.CallActive:
		f.wasActive = true
		fmt.Printf("active: audio after %.0f ms\n", ci.SetupMS)
		if f.duration > 0 {
			f.hangupAt = time.After(f.duration)
		}
	case node.CallEnded:
		fmt.Printf("ended: %s\n", ci.Reason)
		if f.sum != nil {
			f.sum.Reason = ci.Reason
		}
		if !f.wasActive && ci.Direction == node.CallOutgoing {
			return true, fmt.Errorf("call to %s not connected: %s", ci.Peer, ci.Reason)
		}
		return true, nil
	}
	return false, nil
}

// stats prints the once-a-second line of an active call and keeps its
// figures for the --json summary.
func (f *callFollower) stats(ci *node.CallInfo) {
	if ci.State == node.CallActive && f.activeSince.IsZero() {
		f.activeSince = time.Now()
	}
	for ; f.pathsShown < len(ci.Paths); f.pathsShown++ {
		p := ci.Paths[f.pathsShown]
		fmt.Printf("media path %d at %.0f ms: %s | %s\n", f.pathsShown+1, p.AtMS, p.Tier, p.Detail)
	}
	if f.sum != nil && len(ci.Paths) > 0 {
		f.sum.Paths, f.sum.FinalPathMS = ci.Paths, ci.Paths[len(ci.Paths)-1].AtMS
	}
	s := ci.Stats
	if s == nil {
		return
	}
	if sum := f.sum; sum != nil {
		sum.SetupMS, sum.Tier, sum.Path, sum.PathDetail = ci.SetupMS, s.Tier, s.Path, s.PathDetail
		sum.RTTMS, sum.JitterMS, sum.LossPct, sum.ConcealedMS, sum.MOS, sum.ICERestarts = s.RTTMS, s.JitterMS, s.LossPct, s.ConcealedMS, s.MOS, s.ICERestarts
		sum.RecvKbps, sum.SendKbps = s.RecvKbps, s.SendKbps
		if !f.activeSince.IsZero() {
			f.activeMS = float64(time.Since(f.activeSince).Milliseconds())
		}
	}
	if ci.State == node.CallActive {
		fmt.Printf("[%3.0fs] %s | %s | rtt %.1f ms | jitter %.1f ms | loss %.1f%% | concealed %.0f ms | %s | MOS %.2f\n",
			time.Since(f.start).Seconds(), s.Tier, pathLine(s), s.RTTMS, s.JitterMS, s.LossPct, s.ConcealedMS, bitrateLine(s), s.MOS)
	}
}

// ringLine is what to print about ringing devices given the call's latest
// state, and *rang the count printed so far: devices ring one after another,
// so it says so each time another one does, and also when the answer came
// before any ringing was seen.
func ringLine(rang *int, ci node.CallInfo) string {
	if ci.DevicesRang <= *rang || (ci.State != node.CallRinging && *rang > 0) {
		return ""
	}
	*rang = ci.DevicesRang
	return fmt.Sprintf("ringing (%d device(s))", *rang)
}

func pathLine(s *node.CallStats) string {
	if s.PathDetail == "" {
		return "path " + s.MediaState
	}
	return "path " + strings.ReplaceAll(s.PathDetail, "->", "→")
}

// bitrateLine labels what a call receives and sends. CallStats carries only
// the received bitrate (over the last full second, so none until a second of
// audio has arrived); the sent bitrate needs a CallStats field of its own,
// and until it has one, tx is the Opus packets sent in the last second (50
// for 20 ms frames, fewer in DTX silence).
func bitrateLine(s *node.CallStats) string {
	// A rate is known once a full second has been counted.
	rate := func(kbps float64, packets uint64) string {
		if kbps == 0 && packets > 0 {
			return "--"
		}
		return fmt.Sprintf("%.1f", kbps)
	}
	return fmt.Sprintf("rx %s kb/s, tx %s kb/s", rate(s.RecvKbps, s.PacketsIn), rate(s.SendKbps, s.PacketsOut))
}

// callerLabel names the other side of a call: its handle, or a guest (who
// has none) and the server whose page the guest came through.
// The label has a space and parentheses, which no handle has.
func callerLabel(ci *node.CallInfo) string {
	if ci.Guest != "" {
		return "(guest via " + shortID(ci.Guest) + ")"
	}
	return ci.Peer
}
