package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node"
)

// demoCall: alice calls bob; his laptop and phone ring; the laptop answers
// and records; the phone is told the call was answered elsewhere; five
// seconds of a speech-like signal flow; alice hangs up.
// Long because it is one act of the demo's script, told in the order it
// happens, with a check after each step.
func demoCall(ctx context.Context, out io.Writer, dir string, alice, laptop, phone *node.Node, rep *CallReport) error {
	lapEv, stopL := laptop.Subscribe()
	defer stopL()
	phoneEv, stopP := phone.Subscribe()
	defer stopP()
	aliceEv, stopA := alice.Subscribe()
	defer stopA()

	fmt.Fprintf(out, "\nalice calls bob (laptop and phone)\n")
	sent := &teeSource{src: media.SpeechLikeSource(2026)}
	call, err := alice.Call(ctx, "bob", node.CallOptions{Source: sent})
	if err != nil {
		return fmt.Errorf("alice calls bob: %w", err)
	}
	defer call.Hangup()
	for _, ev := range []struct {
		who string
		ch  <-chan node.Event
	}{{"bob-laptop", lapEv}, {"bob-phone", phoneEv}} {
		if _, err := waitCallEvent(ctx, ev.ch, func(c node.CallInfo) bool { return c.State == node.CallRinging }); err != nil {
			return fmt.Errorf("%s never rang: %w", ev.who, err)
		}
		fmt.Fprintf(out, "  %-10s rings\n", ev.who)
	}
	if _, err := waitCallEvent(ctx, aliceEv, func(c node.CallInfo) bool { return c.DevicesRang == 2 || c.State == node.CallEnded }); err != nil {
		return err
	}

	lc, err := laptop.FindCall(call.ID())
	if err != nil {
		return err
	}
	rec, err := os.Create(dir + "/bob-laptop.opus")
	if err != nil {
		return err
	}
	heard := media.NewCaptureSink(0)
	if err := lc.Answer(ctx, node.CallOptions{Sink: heard, Recorder: rec, Closers: []io.Closer{rec}}); err != nil {
		return fmt.Errorf("laptop answers: %w", err)
	}
	fmt.Fprintf(out, "  bob-laptop answers\n")
	pe, err := waitCallEvent(ctx, phoneEv, func(c node.CallInfo) bool { return c.State == node.CallEnded })
	if err != nil {
		return fmt.Errorf("phone kept ringing: %w", err)
	}
	rep.AnsweredElsewhere = pe.AnsweredElsewhere
	fmt.Fprintf(out, "  bob-phone  stops ringing: %s\n", pe.Reason)
	active, err := waitCallEvent(ctx, aliceEv, func(c node.CallInfo) bool { return c.State == node.CallActive || c.State == node.CallEnded })
	if err != nil || active.State != node.CallActive {
		return fmt.Errorf("call never carried audio (%s): %v", active.Reason, err)
	}
	rep.SetupMS = round(active.SetupMS)
	fmt.Fprintf(out, "  audio flowing after %.0f ms; sending %s of a speech-like signal\n", active.SetupMS, demoCallAudio)

	wctx, cancel := context.WithTimeout(ctx, demoCallAudio+20*time.Second)
	defer cancel()
	if err := heard.Wait(wctx, int(demoCallAudio.Seconds()*media.SampleRate)); err != nil {
		return fmt.Errorf("laptop heard %.1f s of audio: %w", float64(heard.Len())/media.SampleRate, err)
	}
	info := call.Info()
	if info.Stats != nil {
		rep.Candidate = info.Stats.Path
		rep.Path = info.Stats.Tier
		rep.RTTMS, rep.JitterMS = round(info.Stats.RTTMS), round(info.Stats.JitterMS)
		rep.LossPct, rep.MOS = round(info.Stats.LossPct), round(info.Stats.MOS)
		fmt.Fprintf(out, "  path %s | rtt %.2f ms | jitter %.2f ms | loss %.1f%% | MOS %.2f\n", info.Stats.PathDetail, rep.RTTMS, rep.JitterMS, rep.LossPct, rep.MOS)
	}
	rep.DevicesRang = info.DevicesRang
	call.Hangup()
	if _, err := waitCallEvent(ctx, lapEv, func(c node.CallInfo) bool { return c.State == node.CallEnded }); err != nil {
		return errors.New("laptop did not see the hangup")
	}
	peak, whole := media.SegmentCorrelation(sent.samples(), heard.Samples(), 2*media.SampleRate)
	_, lag := media.Correlation(sent.samples(), heard.Samples(), 2*media.SampleRate)
	rep.AudioCorrelation = float64(int64(peak*1000+0.5)) / 1000
	rep.WholeCorrelation = float64(int64(whole*1000+0.5)) / 1000
	recorded := int64(0)
	if st, err := os.Stat(dir + "/bob-laptop.opus"); err == nil {
		recorded = st.Size()
	}
	fmt.Fprintf(out, "  hung up; what bob heard correlates %.3f with what alice sent (half-second segments; %.3f as one alignment at %.0f ms); the laptop recorded %d KiB of Ogg Opus\n",
		peak, whole, float64(lag)*1000/media.SampleRate, recorded>>10)
	return nil
}

func waitCallEvent(ctx context.Context, ch <-chan node.Event, ok func(node.CallInfo) bool) (node.CallInfo, error) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e, open := <-ch:
			if !open {
				return node.CallInfo{}, errors.New("node stopped")
			}
			if e.Type == "call" && ok(*e.Call) {
				return *e.Call, nil
			}
		case <-timeout:
			return node.CallInfo{}, errors.New("timed out after 30s")
		case <-ctx.Done():
			return node.CallInfo{}, ctx.Err()
		}
	}
}

// teeSource keeps a copy of what a source produced, so the demo compares
// what bob heard with what alice really sent.
type teeSource struct {
	mu  sync.Mutex
	src media.Source
	out []int16
}

func (s *teeSource) ReadFrame(f []int16) error {
	err := s.src.ReadFrame(f)
	s.mu.Lock()
	s.out = append(s.out, f...)
	s.mu.Unlock()
	return err
}

func (s *teeSource) samples() []int16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int16(nil), s.out...)
}
