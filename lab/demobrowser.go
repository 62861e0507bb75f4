package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-net/parley/browser/headless"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node"
)

// BrowserReport sums up the demo's browser part (parley demo --browser):
// headless Chromium in alice's web app calls bob's laptop, and is called
// by it.
type BrowserReport struct {
	OK       bool   `json:"ok"`
	Chromium string `json:"chromium"` // the browser's version line
	// SetupMS is the browser's call, from placing it to the page hearing
	// audio.
	SetupMS float64 `json:"setup_ms"`
	// ToNodeCorrelation is how well what bob heard matches the WAV the
	// browser's microphone played (media.LoopCorrelation).
	ToNodeCorrelation float64 `json:"to_node_correlation"`
	// ToBrowserHz is the tone the page's WebAudio analyser heard of
	// bob's demoTone.
	ToBrowserHz float64 `json:"to_browser_hz"`
	Error       string  `json:"error,omitempty"`
}

// demoTone is what bob sends the browser.
const demoTone = 997.0

func (b *BrowserReport) check() error {
	switch {
	case b.ToNodeCorrelation < minCorrelation:
		return fmt.Errorf("demo browser: browser -> node correlation %.3f below %.1f", b.ToNodeCorrelation, minCorrelation)
	case math.Abs(b.ToBrowserHz-demoTone) > 5:
		return fmt.Errorf("demo browser: the page heard %.1f Hz of a %.0f Hz tone", b.ToBrowserHz, demoTone)
	}
	return nil
}

// demoBrowser: alice's web app in headless Chromium, whose fake microphone
// plays a speech-like WAV, calls bob; his laptop answers and records; then
// the laptop calls alice with a tone, the page answers and measures it.
func demoBrowser(ctx context.Context, out io.Writer, dir string, alice, laptop *node.Node, rep *BrowserReport) (err error) {
	defer func() {
		rep.OK = err == nil
		if err != nil {
			rep.Error = err.Error()
		}
	}()
	path, err := headless.Find()
	if err != nil {
		return err
	}
	rep.Chromium = headless.Version(path)
	ui, err := alice.ServeUI("127.0.0.1:0")
	if err != nil {
		return err
	}
	mic, err := media.ReadAll(media.SpeechLikeSource(11), 2*media.SampleRate)
	if err != nil {
		return err
	}
	wav := filepath.Join(dir, "browser-mic.wav")
	if err := writeWAV(wav, mic); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s, headless, opens alice's web app at http://%s/\n", rep.Chromium, ui.Addr())
	b, err := headless.Start(ctx, headless.Options{Path: path, MicWAV: wav, DataDir: filepath.Join(dir, "chromium")})
	if err != nil {
		return err
	}
	defer b.Close()
	tab := b.Context()
	if err := chromedp.Do(tab, chromedp.Navigate(ui.LoginURL())); err != nil {
		return err
	}
	if err := headless.WaitTrue(tab, "the app connects", `!!document.body.dataset.page`, 20*time.Second); err != nil {
		return err
	}
	if err := browserToNode(ctx, out, tab, alice, laptop, mic, rep); err != nil {
		return err
	}
	if err := nodeToBrowser(ctx, out, tab, alice, laptop, rep); err != nil {
		return err
	}
	return rep.check()
}

func writeWAV(path string, samples []int16) error {
	w, err := media.CreateWAVSink(path)
	if err != nil {
		return err
	}
	for i := 0; i+media.FrameSamples <= len(samples); i += media.FrameSamples {
		if err := w.WriteFrame(samples[i : i+media.FrameSamples]); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// browserToNode: the page calls bob with the browser's microphone.
func browserToNode(ctx context.Context, out io.Writer, tab context.Context, alice, laptop *node.Node, mic []int16, rep *BrowserReport) error {
	lapEv, stop := laptop.Subscribe()
	defer stop()
	aliceEv, stopA := alice.Subscribe()
	defer stopA()
	if _, err := headless.Eval[any](tab, `parley.startCall('bob')`); err != nil {
		return err
	}
	ring, err := waitCallEvent(ctx, lapEv, func(c node.CallInfo) bool { return c.State == node.CallRinging })
	if err != nil {
		return fmt.Errorf("bob-laptop never rang for the browser: %w", err)
	}
	lc, err := laptop.FindCall(ring.ID)
	if err != nil {
		return err
	}
	heard := media.NewCaptureSink(0)
	if err := lc.Answer(ctx, node.CallOptions{Sink: heard}); err != nil {
		return fmt.Errorf("laptop answers the browser: %w", err)
	}
	defer lc.Hangup()
	active, err := waitCallEvent(ctx, aliceEv, func(c node.CallInfo) bool { return c.State == node.CallActive || c.State == node.CallEnded })
	if err != nil || active.State != node.CallActive {
		return fmt.Errorf("the browser's call never carried audio (%s): %v", active.Reason, err)
	}
	rep.SetupMS = round(active.SetupMS)
	fmt.Fprintf(out, "  the page calls bob with its microphone: audio after %.0f ms\n", active.SetupMS)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := heard.Wait(wctx, 4*media.SampleRate); err != nil {
		return fmt.Errorf("bob heard %.1f s from the browser: %w", float64(heard.Len())/media.SampleRate, err)
	}
	med, _ := media.LoopCorrelation(mic, heard.Samples()[media.SampleRate:])
	rep.ToNodeCorrelation = round3(med)
	ac, err := alice.FindCall(ring.ID)
	if err == nil {
		if st := ac.Info().Stats; st != nil {
			fmt.Fprintf(out, "  path %s (%s), RTT %.1f ms, MOS %.2f\n", st.Tier, st.PathDetail, st.RTTMS, st.MOS)
		}
	}
	fmt.Fprintf(out, "  bob heard the browser's WAV: correlation %.3f\n", med)
	lc.Hangup()
	_, err = waitCallEvent(ctx, aliceEv, func(c node.CallInfo) bool { return c.ID == ring.ID && c.State == node.CallEnded })
	return err
}

// nodeToBrowser: bob calls alice with a tone; the page answers and listens.
func nodeToBrowser(ctx context.Context, out io.Writer, tab context.Context, alice, laptop *node.Node, rep *BrowserReport) error {
	tone, err := media.ToneSource(demoTone, 0.5)
	if err != nil {
		return err
	}
	call, err := laptop.Call(ctx, "alice", node.CallOptions{Source: tone})
	if err != nil {
		return fmt.Errorf("bob calls the browser: %w", err)
	}
	defer call.Hangup()
	if err := headless.WaitTrue(tab, "the page rings", `!document.getElementById('ringing').hidden`, 20*time.Second); err != nil {
		return err
	}
	if _, err := headless.Eval[any](tab, `document.getElementById('answer').click()`); err != nil {
		return err
	}
	fmt.Fprintf(out, "  bob calls alice with a %.0f Hz tone; the page rings and answers\n", demoTone)
	deadline := time.Now().Add(15 * time.Second)
	var hz float64
	for time.Now().Before(deadline) {
		if hz, err = headless.Eval[float64](tab, `parley.rtc.dominantHz()`); err == nil && math.Abs(hz-demoTone) <= 5 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond): // the analyser fills as audio plays
		}
	}
	rep.ToBrowserHz = math.Round(hz*10) / 10
	fmt.Fprintf(out, "  the page's analyser hears %.1f Hz\n", hz)
	if err != nil {
		return err
	}
	if hz == 0 {
		return errors.New("the page heard nothing")
	}
	return nil
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
