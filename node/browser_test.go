package node

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-net/parley/interop/browser/headless"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/supernode"
)

// The browser tests: Debian's Chromium, headless, with a fake microphone
// playing a WAV file, is a parley user in the web app of a real node, and
// calls a real pion node (and is called by one) over 127.0.0.1.

// browserTone is the tone the node sends the browser: not a multiple of
// the analyser's bin width, so the interpolation is exercised.
const browserTone = 997.0

// micSeconds is the length of the WAV the fake microphone loops.
const micSeconds = 2

type browserRig struct {
	sn      *supernode.Supernode
	alice   *Node // the web app's node; its calls' media is the page's
	bob     *Node // a pion node
	ui      *UI
	b       *headless.Browser
	tab     context.Context
	mic     []int16 // one loop of what the fake microphone plays
	capture *media.CaptureSink
	art     string // where screenshots go
}

func startBrowserRig(t *testing.T) *browserRig {
	t.Helper()
	path, err := headless.Find()
	if err != nil {
		t.Skipf("skipping the browser tests: %v (.ci/run installs it)", err)
	}
	r := &browserRig{sn: startSupernode(t), capture: media.NewCaptureSink(0)}
	r.art = os.Getenv("PARLEY_ARTIFACTS")
	if r.art == "" {
		r.art = t.TempDir()
	}
	r.alice = startCallNode(t, initHome(t, "alice"), r.sn, nil)
	r.bob = startCallNode(t, initHome(t, "bob"), r.sn, nil)
	if r.ui, err = r.alice.ServeUI("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}

	// The microphone: a speech-like signal, which correlates only with
	// itself (a tone would correlate with any tone).
	r.mic, err = media.ReadAll(media.SpeechLikeSource(11), micSeconds*media.SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	wav := filepath.Join(t.TempDir(), "mic.wav")
	sink, err := media.CreateWAVSink(wav)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+media.FrameSamples <= len(r.mic); i += media.FrameSamples {
		sink.WriteFrame(r.mic[i : i+media.FrameSamples])
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}

	r.b, err = headless.Start(context.Background(), headless.Options{Path: path, MicWAV: wav, DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(r.b.Close)
	r.tab = r.b.Context()
	if err := chromedp.Do(r.tab, chromedp.Navigate(r.ui.LoginURL())); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "the app connected", `document.body.dataset.page ? true : false`, 20*time.Second)
	return r
}

// waitJS evaluates expr until it is true, or fails the test after d.
func (r *browserRig) waitJS(t *testing.T, what, expr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(r.tab, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond) // polling the page: it has no event to wait on from here
	}
	t.Fatalf("page: %s: not within %v (last error %v)", what, d, last)
}

func (r *browserRig) eval(t *testing.T, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.tab, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("page: %s: %v", expr, err)
	}
}

// shot saves a screenshot of the page as name.png among the artifacts.
func (r *browserRig) shot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.tab, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(r.art, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

func TestBrowser(t *testing.T) {
	r := startBrowserRig(t)
	ctx := context.Background()

	t.Run("chat round trip in the app", func(t *testing.T) {
		bobEv, stop := r.bob.Subscribe()
		defer stop()
		if err := chromedp.Do(r.tab,
			chromedp.Navigate("http://"+r.ui.Addr()+"/#contacts"),
		); err != nil {
			t.Fatal(err)
		}
		r.waitJS(t, "the app connected", `document.body.dataset.page ? true : false`, 10*time.Second)
		tctx, cancel := context.WithTimeout(r.tab, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx,
			chromedp.SendKeys("#lookup-handle", "bob"),
			chromedp.Click("#lookup button"),
			chromedp.WaitVisible(`#contact-list li`),
		); err != nil {
			t.Fatal(err)
		}
		fp, err := chromedp.Run(tctx, chromedp.Text("#contact-list .fp"))
		if err != nil || !strings.Contains(fp, r.bob.Identity().Fingerprint()) {
			t.Fatalf("the contact card shows %q (%v), want bob's fingerprint %s", fp, err, r.bob.Identity().Fingerprint())
		}
		r.shot(t, "contacts")
		if err := chromedp.Do(tctx,
			chromedp.Click(`#contact-list li button`), // Chat
			chromedp.WaitVisible("#text"),
			chromedp.SendKeys("#text", "hello from the browser"),
			chromedp.Click("#send button"),
		); err != nil {
			t.Fatal(err)
		}
		got := waitMessages(t, bobEv, 1, 20*time.Second)
		if got[0].Body != "hello from the browser" || got[0].From != "alice" {
			t.Fatalf("bob got %+v", got[0])
		}
		if _, err := r.bob.Send(ctx, "alice", "hello back"); err != nil {
			t.Fatal(err)
		}
		r.waitJS(t, "both messages show in the chat", `(() => { const t = document.getElementById('history').textContent;
			return t.includes('hello back') && t.includes('hello from the browser') })()`, 20*time.Second)
		r.shot(t, "chat")
	})

	t.Run("browser calls a node", func(t *testing.T) {
		bobEv, stop := r.bob.Subscribe()
		defer stop()
		r.eval(t, `parley.startCall('bob')`)
		ring := waitCall(t, bobEv, "bob rings", func(c CallInfo) bool { return c.State == CallRinging })
		bc, err := r.bob.FindCall(ring.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := bc.Answer(ctx, CallOptions{Sink: r.capture}); err != nil {
			t.Fatal(err)
		}
		defer bc.Hangup() // the next test needs both free, whatever happens here
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		want := (micSeconds + 2) * media.SampleRate
		if err := r.capture.Wait(wctx, want); err != nil {
			t.Fatalf("bob did not hear %d s from the browser: %v", micSeconds+2, err)
		}
		got := r.capture.Samples()
		if d := os.Getenv("PARLEY_DEBUG_WAV"); d != "" {
			w, _ := media.CreateWAVSink(d)
			for i := 0; i+media.FrameSamples <= len(got); i += media.FrameSamples {
				w.WriteFrame(got[i : i+media.FrameSamples])
			}
			w.Close()
		}
		// Skip the first second (the jitter buffer settles).
		seg, whole := loopCorrelation(r.mic, got[media.SampleRate:])
		ac, err := r.alice.FindCall(ring.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.waitJS(t, "the call screen shows the call active", `document.getElementById('call-state').textContent.startsWith('active')`, 10*time.Second)
		time.Sleep(2 * time.Second) // let the chart draw two more seconds for the screenshot
		r.shot(t, "call")
		info := ac.Info()
		raw, _ := chromedp.Run(r.tab, chromedp.Evaluate[string](`JSON.stringify([...parley.rtc.pcs.values()].map(s => s.last))`))
		t.Logf("page stats %s", raw)
		t.Logf("browser -> node: correlation %.3f (lowest half second %.3f); alice's leg: %+v", seg, whole, info.Stats)
		if raceEnabled {
			// -race slows pion's decoding several times over: what bob
			// hears then says nothing of the browser leg.
			t.Logf("-race: audio quality not judged")
		} else if seg < 0.9 {
			t.Fatalf("bob's recording correlates %.3f with the WAV the browser sent, want >= 0.9", seg)
		}
		if info.State != CallActive || info.Stats == nil || info.Stats.Tier != TierDirect {
			t.Fatalf("alice's browser leg: state %s stats %+v", info.State, info.Stats)
		}
		r.eval(t, `document.getElementById('hangup').click()`)
		waitCall(t, bobEv, "bob hears the hangup", func(c CallInfo) bool { return c.State == CallEnded })
	})

	t.Run("node calls the browser", func(t *testing.T) {
		tone, err := media.ToneSource(browserTone, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		aliceEv, stop := r.alice.Subscribe()
		defer stop()
		call, err := r.bob.Call(ctx, "alice", CallOptions{Source: tone})
		if err != nil {
			t.Fatal(err)
		}
		defer call.Hangup()
		r.waitJS(t, "the page rings", `!document.getElementById('ringing').hidden`, 20*time.Second)
		r.shot(t, "ringing")
		r.eval(t, `document.getElementById('answer').click()`)
		waitCall(t, aliceEv, "the call is active", func(c CallInfo) bool { return c.State == CallActive })
		var hz float64
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			tctx, cancel := context.WithTimeout(r.tab, 5*time.Second)
			hz, err = chromedp.Run(tctx, chromedp.Evaluate[float64](`parley.rtc.dominantHz()`))
			cancel()
			if err == nil && math.Abs(hz-browserTone) <= 5 {
				break
			}
			time.Sleep(200 * time.Millisecond) // the analyser fills as audio plays
		}
		t.Logf("node -> browser: the page hears %.1f Hz (sent %.0f Hz)", hz, browserTone)
		if math.Abs(hz-browserTone) > 5 {
			t.Fatalf("the page hears %.1f Hz, want %.0f ± 5 Hz", hz, browserTone)
		}
		call.Hangup()
		waitCall(t, aliceEv, "alice's leg ends", func(c CallInfo) bool { return c.State == CallEnded })
	})

	t.Run("screens", func(t *testing.T) {
		for _, s := range []string{"devices", "network"} {
			if err := chromedp.Do(r.tab, chromedp.Navigate("http://"+r.ui.Addr()+"/#"+s)); err != nil {
				t.Fatal(err)
			}
			r.waitJS(t, s+" loaded", `document.querySelector('#`+s+` li, #`+s+` tr') !== null`, 10*time.Second)
			r.shot(t, s)
		}
	})
}

// loopCorrelation is how well received matches a signal that loops sent
// (Chromium's fake microphone plays its file over and over, from wherever
// it was when the call began): each half second of received is found in
// two loops of sent, where it lies whole, and correlated there. It returns
// the median of those peaks, and the lowest.
func loopCorrelation(sent, received []int16) (median, lowest float64) {
	const piece, slack, dec = media.SampleRate / 2, 2 * media.FrameSamples, 8
	two := append(append([]int16(nil), sent...), sent...)
	down := func(x []int16) []float64 { // a box filter, then every dec-th sample
		out := make([]float64, len(x)/dec)
		for i := range out {
			for _, v := range x[i*dec : i*dec+dec] {
				out[i] += float64(v)
			}
		}
		return out
	}
	d2 := down(two)
	var peaks []float64
	for at := 0; at+piece <= len(received); at += piece {
		p := received[at : at+piece]
		dp := down(p)
		var pe float64
		for _, v := range dp {
			pe += v * v
		}
		best, bestK := math.Inf(-1), 0
		// Coarse: every start where the piece lies whole in two loops
		// (the first loop's length of starts covers every phase).
		for k := 0; k+len(dp) <= len(d2) && k < len(sent)/dec; k++ {
			var xy, ee float64
			for i, v := range dp {
				xy += v * d2[k+i]
				ee += d2[k+i] * d2[k+i]
			}
			if ee > 0 && pe > 0 {
				if c := xy / math.Sqrt(ee*pe); c > best {
					best, bestK = c, k
				}
			}
		}
		// Fine: around it at the full rate.
		lo := max(0, bestK*dec-slack)
		hi := min(len(two), bestK*dec+piece+slack)
		c, _ := media.Correlation(two[lo:hi], p, 2*slack)
		peaks = append(peaks, c)
	}
	if len(peaks) == 0 {
		return 0, 0
	}
	sort.Float64s(peaks)
	return peaks[len(peaks)/2], peaks[0]
}
