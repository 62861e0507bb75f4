package node

import (
	"context"
	"log/slog"
	"os"
	"strings"
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

	r, mic := guestBrowser(t, path, 23)
	t.Cleanup(func() {
		if t.Failed() { // what the page said, and its peer connections' trace
			tctx, cancel := context.WithTimeout(r.tab, 5*time.Second)
			defer cancel()
			st, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.getElementById('status').textContent + ' | ' + JSON.stringify(window.guestRTC && window.guestRTC.trace)`))
			t.Logf("page: %s", st)
		}
	})
	base := "http://" + sn.GuestWebAddr().String()

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
	defer bc.Hangup()
	seg, whole := r.guestHeard(t, bc, mic, micSeconds+2)
	if e := waitCall(t, phoneEv, "the phone stops ringing", func(c CallInfo) bool { return c.State == CallEnded }); !e.AnsweredElsewhere {
		t.Fatalf("the phone's call ended with %q, want answered elsewhere", e.Reason)
	}
	t.Logf("guest -> node: correlation %.3f (lowest half second %.3f); bob's call %+v", seg, whole, bc.Info().Stats)
	if seg < 0.9 {
		t.Fatalf("bob's recording correlates %.3f with the WAV the guest's page sent, want >= 0.9", seg)
	}
	r.shot(t, "guest-call")
	r.guestHangsUp(t, bobEv, ring.ID)

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

// guestBrowser starts headless Chromium whose microphone plays micSeconds
// of speech-like sound from seed, and returns its rig and what it plays.
func guestBrowser(t *testing.T, path string, seed uint64) (*browserRig, []int16) {
	t.Helper()
	mic, err := media.ReadAll(media.SpeechLikeSource(seed), micSeconds*media.SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	return micBrowser(t, path, mic), mic
}

// guestHeard answers a guest's ring on bc (bob's device), waits for the
// page to say answered and for bob to hear secs seconds, and returns how
// what bob heard after its first second correlates with the page's mic
// (LoopCorrelation: by segment, and its lowest half second).
func (r *browserRig) guestHeard(t *testing.T, bc *Call, mic []int16, secs int) (seg, low float64) {
	t.Helper()
	capture := media.NewCaptureSink(0)
	if err := bc.Answer(context.Background(), CallOptions{Sink: capture}); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "the page says answered", `document.body.dataset.guest === 'answered'`, 10*time.Second)
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := capture.Wait(wctx, secs*media.SampleRate); err != nil {
		t.Fatalf("bob did not hear %d s from the guest: %v", secs, err)
	}
	return media.LoopCorrelation(mic, capture.Samples()[media.SampleRate:])
}

// guestHangsUp clicks the guest page's hangup and waits for bob's call to
// end.
func (r *browserRig) guestHangsUp(t *testing.T, bobEv <-chan Event, id string) {
	t.Helper()
	if err := chromedp.Do(r.tab, chromedp.Click("#hangup")); err != nil {
		t.Fatal(err)
	}
	waitCall(t, bobEv, "bob's call ends when the guest hangs up", func(c CallInfo) bool { return c.ID == id && c.State == CallEnded })
}

// TestGuestCallSurvivesRelayLoss: a guest's page calls erin, a pion node
// on the mobile profile (relay only: the supernode's TURN, then her cloud
// relay), through the supernode that serves the page and carries the
// call's signalling. Mid-call the supernode's TURN dies (the supernode and
// the page's WebSocket stay up). The page hears nothing, reads as
// disconnected, and the guest's call machine on the supernode (the
// caller's side) asks it for an ICE-restart offer; erin answers with her
// cloud relay, and hears the guest's microphone again. When the cloud
// relay dies too, the call ends on both sides ("no media path").
func TestGuestCallSurvivesRelayLoss(t *testing.T) {
	path, err := headless.Find()
	if err != nil {
		t.Skipf("skipping the guest browser test: %v (.ci/run installs it)", err)
	}
	sn := startSupernodeWith(t, supernode.Config{Listen: loopback, Logger: guestTestLogger(), Web: "127.0.0.1:0", TURN: turnConfig("127.0.0.1")})
	r, mic := guestBrowser(t, path, 29)
	r.sn, r.mic = sn, mic
	cloud := startCloudRelay(t)
	sink := media.NewCaptureSink(0)
	answered, auto := answerInto(sink)
	erin := r.failoverPeer(t, "erin", cloud, auto)
	if err := chromedp.Do(r.tab, chromedp.Navigate("http://"+sn.GuestWebAddr().String()+"/call/erin"), chromedp.WaitVisible("#call"), chromedp.Click("#call")); err != nil {
		t.Fatal(err)
	}
	call := answeredOnSupernodeTURN(t, erin, answered, sink)
	defer call.Hangup()
	r.waitJS(t, "the page says answered", `document.body.dataset.guest === 'answered'`, 10*time.Second)
	if err := sn.TURN().Close(); err != nil {
		t.Logf("closing the supernode's TURN: %v", err)
	}
	d := 15 * time.Second
	if raceEnabled {
		d = 40 * time.Second // -race slows pion's TURN and ICE several times over
	}
	moved := waitTier(t, call, TierCloud, d)
	r.heardAgain(t, sink, 3, "erin")
	info := call.Info()
	t.Logf("supernode TURN killed: erin's call with the guest is on the cloud tier after %v, %d ICE restart(s), paths %+v",
		moved.Round(time.Millisecond), info.Stats.ICERestarts, info.Paths)
	if info.Stats.ICERestarts < 1 {
		t.Fatalf("the guest's call moved without an ICE restart: %+v", info.Stats)
	}

	// Now the cloud relay dies too: erin has no relay left. The guest's
	// call machine restarts ICE every 3 s, gives up after 5 restarts in a
	// row, and ends the call on both sides with the reason, not silence
	// for ever.
	cloud.Close()
	select {
	case <-call.Done():
	case <-time.After(40 * time.Second):
		t.Fatalf("erin's call still up 40 s after her last relay died: %+v", call.Info())
	}
	if got := call.Info().Reason; !strings.Contains(got, ReasonNoMediaPath) {
		t.Fatalf("erin's call ended with %q, want the guest's %q", got, ReasonNoMediaPath)
	}
	r.waitJS(t, "the page says the media path failed", `document.body.dataset.guest === 'ended' && document.getElementById('status').textContent.includes('media path')`, 10*time.Second)
}
