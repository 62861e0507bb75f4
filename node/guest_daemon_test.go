package node

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/browser/headless"
)

// TestGuestCallViaDaemon: guests served by a public daemon rather than a
// supernode (`parley daemon --web`). A person without parley opens carol's
// daemon's /call/bob page in Chromium and calls: bob's device rings as a
// guest via carol's device (no handle), bob answers and his recording
// correlates with the WAV the page sent; the page's hangup ends his call.
func TestGuestCallViaDaemon(t *testing.T) {
	path, err := headless.Find()
	if err != nil {
		t.Skipf("skipping the guest browser test: %v (.ci/run installs it)", err)
	}
	sn := startSupernode(t)
	bob := startCallNode(t, initHome(t, "bob"), sn, nil)
	carol := startCallNode(t, initHome(t, "carol"), sn, nil)
	g, err := carol.ServeGuests("127.0.0.1:0", browser.GuestConfig{Logger: guestTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })

	r, mic := guestBrowser(t, path, 29)
	bobEv, stop := bob.Subscribe()
	defer stop()
	if err := chromedp.Do(r.tab, chromedp.Navigate(g.URL()+"/call/bob"), chromedp.WaitVisible("#call"), chromedp.Click("#call")); err != nil {
		t.Fatal(err)
	}
	ring := waitCall(t, bobEv, "bob rings", func(c CallInfo) bool { return c.State == CallRinging })
	if ring.Guest != carol.ID().String() || ring.Peer != "" {
		t.Fatalf("the ring says peer %q guest %q, want no handle and guest via carol's device %s", ring.Peer, ring.Guest, carol.ID())
	}
	r.waitJS(t, "the page says ringing", `document.body.dataset.guest === 'ringing'`, 10*time.Second)
	bc, err := bob.FindCall(ring.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Hangup()
	seg, low := r.guestHeard(t, bc, mic, micSeconds+1)
	t.Logf("guest via a daemon -> node: correlation %.3f (lowest half second %.3f)", seg, low)
	if raceEnabled {
		t.Logf("-race: audio quality not judged")
	} else if seg < 0.9 {
		t.Fatalf("bob's recording correlates %.3f with the WAV the guest's page sent, want >= 0.9", seg)
	}
	r.guestHangsUp(t, bobEv, ring.ID)
}
