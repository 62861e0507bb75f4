package node

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-net/parley/browser/headless"
	"github.com/parley-net/parley/media"
)

// carolTone is what carol's fake microphone plays, apart from browserTone.
const carolTone = 660.0

// browserCallsBrowser: the page of alice's web app calls carol, whose own
// web app runs in a second Chromium; carol answers in her page, and each
// page's RTCPeerConnection carries the audio straight to the other, with
// the two daemons only signalling. Alice's page hears carol's tone; carol's
// page receives alice's microphone.
func (r *browserRig) browserCallsBrowser(t *testing.T) {
	path, err := headless.Find()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	carol := startCallNode(t, initHome(t, "carol"), r.sn, nil)
	ui, err := carol.ServeUI("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tone, err := media.ToneSource(carolTone, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	samples, err := media.ReadAll(tone, micSeconds*media.SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	cr := micBrowser(t, path, samples)
	if err := chromedp.Do(cr.tab, chromedp.Navigate(ui.LoginURL())); err != nil {
		t.Fatal(err)
	}
	cr.waitJS(t, "carol's app connected", `document.body.dataset.page ? true : false`, 20*time.Second)

	aliceEv, stop := r.alice.Subscribe()
	defer stop()
	carolEv, stopC := carol.Subscribe()
	defer stopC()
	r.eval(t, `parley.startCall('carol')`)
	cr.waitJS(t, "carol's page rings", `!document.getElementById('ringing').hidden`, 20*time.Second)
	cr.eval(t, `document.getElementById('answer').click()`)
	ring := waitCall(t, carolEv, "carol's call is active", func(c CallInfo) bool { return c.State == CallActive })
	waitCall(t, aliceEv, "alice's call is active", func(c CallInfo) bool { return c.State == CallActive })

	r.waitHz(t, carolTone, 15*time.Second) // alice's page hears carol's tone
	// Alice's microphone is speech-like, not a tone: carol's page must be
	// receiving it (packets, and sound above the analyser's floor).
	cr.waitJS(t, "carol's page receives alice's audio", `(() => {
		const s = [...parley.rtc.pcs.values()][0];
		return s && s.last && s.last.packets_in > 100 && parley.rtc.dominantHz() > 0 })()`, 15*time.Second)
	c, err := carol.FindCall(ring.ID)
	if err != nil {
		t.Fatal(err)
	}
	st := c.Info().Stats
	if st == nil || st.Tier != TierDirect {
		t.Fatalf("carol's leg: %+v, want a direct path between the two pages", st)
	}
	t.Logf("page to page: %s, rtt %.1f ms, MOS %.2f", st.PathDetail, st.RTTMS, st.MOS)
	cr.eval(t, `document.getElementById('hangup').click()`)
	waitCall(t, aliceEv, "alice's leg ends", func(c CallInfo) bool { return c.State == CallEnded })
}
