package node

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-net/parley/browser/headless"
	"github.com/parley-net/parley/internal/nodetest"
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
	sn    *supernode.Supernode
	alice *Node // the web app's node; its calls' media is the page's
	// alicePhone is alice's second device, a pion node: a call to alice
	// rings it and the page.
	alicePhone *Node
	bob        *Node // a pion node
	phone      *Node // bob's second device: both ring
	ui         *UI
	b          *headless.Browser
	tab        context.Context
	mic        []int16 // one loop of what the fake microphone plays
	capture    *media.CaptureSink
	art        string // where screenshots go
}

func startBrowserRig(t *testing.T) *browserRig {
	t.Helper()
	path, err := headless.Find()
	if err != nil {
		t.Skipf("skipping the browser tests: %v (.ci/run installs it)", err)
	}
	// The supernode runs TURN (the supernode relay tier) for the failover
	// tests.
	sn := startSupernodeWith(t, supernode.Config{Listen: nodetest.Loopback, TURN: turnConfig("127.0.0.1")})
	r := &browserRig{sn: sn, capture: media.NewCaptureSink(0)}
	aliceHome := initHome(t, "alice")
	alicePhoneHome := linkDevice(t, aliceHome, "alice-phone")
	r.alice = startCallNode(t, aliceHome, r.sn, nil)
	r.alicePhone = startCallNode(t, alicePhoneHome, r.sn, nil)
	bobHome := initHome(t, "bob")
	phoneHome := linkDevice(t, bobHome, "bob-phone")
	r.bob = startCallNode(t, bobHome, r.sn, nil)
	r.phone = startCallNode(t, phoneHome, r.sn, nil)
	if r.ui, err = r.alice.ServeUI("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}

	// The microphone: a speech-like signal, which correlates only with
	// itself (a tone would correlate with any tone).
	r.mic, err = media.ReadAll(media.SpeechLikeSource(11), micSeconds*media.SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	mr := micBrowser(t, path, r.mic)
	r.b, r.tab, r.art = mr.b, mr.tab, mr.art
	if err := chromedp.Do(r.tab, chromedp.Navigate(r.ui.LoginURL())); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "the app connected", `document.body.dataset.page ? true : false`, 20*time.Second)
	return r
}

// open shows the web app's screen (#screen) and waits until the app is
// connected.
func (r *browserRig) open(t *testing.T, screen string) {
	t.Helper()
	if err := chromedp.Do(r.tab, chromedp.Navigate("http://"+r.ui.Addr()+"/#"+screen)); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "the app connected", `document.body.dataset.page ? true : false`, 10*time.Second)
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
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(r.art, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

// TestBrowser is one rig (Chromium, a supernode, three nodes) for every
// subtest, since starting Chromium costs seconds: hence its length.
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
		phoneEv, stopP := r.phone.Subscribe()
		defer stopP()
		r.eval(t, `parley.startCall('bob')`)
		ring := waitCall(t, bobEv, "bob rings", func(c CallInfo) bool { return c.State == CallRinging })
		waitCall(t, phoneEv, "bob's phone rings", func(c CallInfo) bool { return c.State == CallRinging })
		bc, err := r.bob.FindCall(ring.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := bc.Answer(ctx, CallOptions{Sink: r.capture}); err != nil {
			t.Fatal(err)
		}
		defer bc.Hangup() // the next test needs both free, whatever happens here
		if e := waitCall(t, phoneEv, "the phone stops ringing", func(c CallInfo) bool { return c.State == CallEnded }); !e.AnsweredElsewhere {
			t.Fatalf("the phone's call ended with %q, want answered elsewhere", e.Reason)
		}
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
		seg, whole := media.LoopCorrelation(r.mic, got[media.SampleRate:])
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
		trace, _ := chromedp.Run(r.tab, chromedp.Evaluate[string](`parley.rtc.trace.map(e => e.join(' ')).join('\n')`))
		t.Logf("page trace:\n%s", trace)
		t.Logf("browser -> node: correlation %.3f (lowest half second %.3f), setup %.0f ms; alice's leg: %+v", seg, whole, info.SetupMS, info.Stats)
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
		phoneEv, stopP := r.alicePhone.Subscribe()
		defer stopP()
		call, err := r.bob.Call(ctx, "alice", CallOptions{Source: tone})
		if err != nil {
			t.Fatal(err)
		}
		defer call.Hangup()
		r.waitJS(t, "the page rings", `!document.getElementById('ringing').hidden`, 20*time.Second)
		r.shot(t, "ringing")
		waitCall(t, phoneEv, "alice's phone rings too", func(c CallInfo) bool { return c.State == CallRinging })
		r.eval(t, `document.getElementById('answer').click()`)
		waitCall(t, aliceEv, "the call is active", func(c CallInfo) bool { return c.State == CallActive })
		// The page took it: alice's phone stops ringing, answered elsewhere.
		if e := waitCall(t, phoneEv, "alice's phone stops ringing", func(c CallInfo) bool { return c.State == CallEnded }); !e.AnsweredElsewhere {
			t.Fatalf("alice's phone's call ended with %q, want answered elsewhere", e.Reason)
		}
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

	t.Run("groups in the app", r.browserGroups)
	t.Run("answered elsewhere: the page stops ringing", r.browserAnsweredElsewhere)
	t.Run("a page calls a page", r.browserCallsBrowser)

	t.Run("screens", func(t *testing.T) {
		for _, s := range []string{"devices", "network"} {
			if err := chromedp.Do(r.tab, chromedp.Navigate("http://"+r.ui.Addr()+"/#"+s)); err != nil {
				t.Fatal(err)
			}
			r.waitJS(t, s+" loaded", `document.querySelector('#`+s+` li, #`+s+` tr') !== null`, 10*time.Second)
			r.shot(t, s)
		}
		// A phone's width: nothing wider than the screen.
		if err := chromedp.Do(r.tab, chromedp.EmulateViewport(390, 844), chromedp.Navigate("http://"+r.ui.Addr()+"/#chat")); err != nil {
			t.Fatal(err)
		}
		r.waitJS(t, "the chat at a phone's width", `document.querySelectorAll('#history li').length > 0`, 10*time.Second)
		r.waitJS(t, "no horizontal scrolling at a phone's width", `document.documentElement.scrollWidth <= 390`, 5*time.Second)
		r.shot(t, "chat-phone")
		if err := chromedp.Do(r.tab, chromedp.Navigate("http://"+r.ui.Addr()+"/#groups")); err != nil {
			t.Fatal(err)
		}
		r.waitJS(t, "the groups at a phone's width", `document.querySelectorAll('#group-list li').length > 0`, 10*time.Second)
		r.waitJS(t, "no horizontal scrolling at a phone's width", `document.documentElement.scrollWidth <= 390`, 5*time.Second)
		r.shot(t, "groups-phone")
	})

	// Last: each kills a relay the rig had.
	t.Run("failover: a node calls the page, its relay dies", r.browserFailoverNodeCalls)
	t.Run("failover: the page calls a node, its relay dies", r.browserFailoverPageCalls)
}

// micBrowser starts headless Chromium whose fake microphone loops mic, and
// returns its rig: the browser, its tab, where its screenshots go.
func micBrowser(t *testing.T, path string, mic []int16) *browserRig {
	t.Helper()
	wav := filepath.Join(t.TempDir(), "mic.wav")
	sink, err := media.CreateWAVSink(wav)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+media.FrameSamples <= len(mic); i += media.FrameSamples {
		sink.WriteFrame(mic[i : i+media.FrameSamples])
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := headless.Start(context.Background(), headless.Options{Path: path, MicWAV: wav, DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(b.Close)
	r := &browserRig{b: b, tab: b.Context(), art: os.Getenv("PARLEY_ARTIFACTS")}
	if r.art == "" {
		r.art = t.TempDir()
	}
	return r
}
