package node

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/browser/headless"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/supernode"
)

// TestGuestCallFromBrowser: a person without parley opens a supernode's
// /call/bob page in Chromium (a fake microphone playing a WAV) and calls.
// Both of bob's devices ring as a guest via the supernode, with no handle;
// bob answers on one (a pion node), the other stops ringing (answered
// elsewhere), and bob's recording correlates with the WAV the page sent.
// The page's hangup ends bob's call; carol, who takes no guests, refuses
// with a reason the page shows.
func TestGuestCallFromBrowser(t *testing.T) {
	path, err := headless.Find()
	if err != nil {
		t.Skipf("skipping the guest browser test: %v (.ci/run installs it)", err)
	}
	sn, err := supernode.New(context.Background(), supernode.Config{Home: t.TempDir(), Listen: loopback, Logger: guestTestLogger(), Web: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	bobHome := initHome(t, "bob")
	phoneHome := linkDevice(t, bobHome, "bob-phone")
	bob := startCallNode(t, bobHome, sn, nil)
	phone := startCallNode(t, phoneHome, sn, nil)
	carol, err := Start(context.Background(), Config{Home: initHome(t, "carol"), Listen: loopback, Bootstrap: []peer.AddrInfo{sn.AddrInfo()},
		Logger: quietLogger(), Media: loopbackMedia, NoGuests: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { carol.Close() })

	mic, err := media.ReadAll(media.SpeechLikeSource(23), micSeconds*media.SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	wav := filepath.Join(t.TempDir(), "guest.wav")
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
	t.Cleanup(func() {
		if t.Failed() { // what the page said, and its peer connections' trace
			tctx, cancel := context.WithTimeout(r.tab, 5*time.Second)
			defer cancel()
			st, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.getElementById('status').textContent + ' | ' + JSON.stringify(window.guestRTC && window.guestRTC.trace)`))
			t.Logf("page: %s", st)
		}
	})
	base := "http://" + sn.GuestWebAddr().String()
	ctx := context.Background()

	bobEv, stop := bob.Subscribe()
	defer stop()
	phoneEv, stopP := phone.Subscribe()
	defer stopP()
	if err := chromedp.Do(r.tab, chromedp.Navigate(base+"/call/bob"), chromedp.WaitVisible("#call"), chromedp.Click("#call")); err != nil {
		t.Fatal(err)
	}
	ring := waitCall(t, bobEv, "bob rings", func(c CallInfo) bool { return c.State == CallRinging })
	pring := waitCall(t, phoneEv, "bob's phone rings", func(c CallInfo) bool { return c.State == CallRinging })
	for _, c := range []CallInfo{ring, pring} {
		if c.Guest != sn.ID().String() || c.Peer != "" {
			t.Fatalf("the ring says peer %q guest %q, want no handle and guest via %s", c.Peer, c.Guest, sn.ID())
		}
	}
	r.waitJS(t, "the page says ringing", `document.body.dataset.guest === 'ringing'`, 10*time.Second)
	bc, err := bob.FindCall(ring.ID)
	if err != nil {
		t.Fatal(err)
	}
	capture := media.NewCaptureSink(0)
	if err := bc.Answer(ctx, CallOptions{Sink: capture}); err != nil {
		t.Fatal(err)
	}
	defer bc.Hangup()
	if e := waitCall(t, phoneEv, "the phone stops ringing", func(c CallInfo) bool { return c.State == CallEnded }); !e.AnsweredElsewhere {
		t.Fatalf("the phone's call ended with %q, want answered elsewhere", e.Reason)
	}
	r.waitJS(t, "the page says answered", `document.body.dataset.guest === 'answered'`, 10*time.Second)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := capture.Wait(wctx, (micSeconds+2)*media.SampleRate); err != nil {
		t.Fatalf("bob did not hear %d s from the guest: %v", micSeconds+2, err)
	}
	seg, whole := media.LoopCorrelation(mic, capture.Samples()[media.SampleRate:])
	t.Logf("guest -> node: correlation %.3f (lowest half second %.3f); bob's call %+v", seg, whole, bc.Info().Stats)
	if seg < 0.9 {
		t.Fatalf("bob's recording correlates %.3f with the WAV the guest's page sent, want >= 0.9", seg)
	}
	r.shot(t, "guest-call")
	if err := chromedp.Do(r.tab, chromedp.Click("#hangup")); err != nil {
		t.Fatal(err)
	}
	waitCall(t, bobEv, "bob's call ends when the guest hangs up", func(c CallInfo) bool { return c.ID == ring.ID && c.State == CallEnded })

	// carol takes no guests: the page says so.
	if err := chromedp.Do(r.tab, chromedp.Navigate(base+"/call/carol"), chromedp.WaitVisible("#call"), chromedp.Click("#call")); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "the page says carol takes no guests", `document.body.dataset.guest === 'ended' && document.getElementById('status').textContent.includes('no guests')`, 20*time.Second)
}

// guestTestLogger is the supernode's logger: PARLEY_DEBUG_GUEST=1 shows it.
func guestTestLogger() *slog.Logger {
	if os.Getenv("PARLEY_DEBUG_GUEST") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return quietLogger()
}
