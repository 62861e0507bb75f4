package node

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/cloudrelay"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
)

// Ring-all, answered-elsewhere and relay failover with a browser leg: the
// call machine is the same as with two pion sessions, and these show it
// with Chromium's own WebRTC on one side.

// browserAnsweredElsewhere: bob calls alice, whose two devices are the web
// app (the page) and a pion node; both ring, the pion device answers and
// hears bob, and the page stops ringing with "answered elsewhere" and
// never opened a peer connection.
func (r *browserRig) browserAnsweredElsewhere(t *testing.T) {
	ctx := context.Background()
	r.open(t, "contacts")
	phoneEv, stop := r.alicePhone.Subscribe()
	defer stop()
	aliceEv, stopA := r.alice.Subscribe()
	defer stopA()
	src := &tee{src: media.SpeechLikeSource(5)}
	call, err := r.bob.Call(ctx, "alice", CallOptions{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	defer call.Hangup()
	ring := waitCall(t, phoneEv, "alice's phone rings", func(c CallInfo) bool { return c.State == CallRinging })
	r.waitJS(t, "the page rings", `!document.getElementById('ringing').hidden`, 20*time.Second)
	pc, err := r.alicePhone.FindCall(ring.ID)
	if err != nil {
		t.Fatal(err)
	}
	sink := media.NewCaptureSink(0)
	if err := pc.Answer(ctx, CallOptions{Sink: sink}); err != nil {
		t.Fatal(err)
	}
	if e := waitCall(t, aliceEv, "the web app's leg ends", func(c CallInfo) bool { return c.State == CallEnded }); !e.AnsweredElsewhere {
		t.Fatalf("the web app's call ended with %q, want answered elsewhere", e.Reason)
	}
	r.waitJS(t, "the page stops ringing and says answered elsewhere", `document.getElementById('ringing').hidden
		&& document.getElementById('ring-note').textContent.includes('answered elsewhere')
		&& parley.rtc.pcs.size === 0`, 10*time.Second)
	r.shot(t, "answered-elsewhere")
	// The phone hears bob.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := sink.Wait(wctx, 2*media.SampleRate); err != nil {
		t.Fatalf("alice's phone did not hear bob: %v", err)
	}
	got := sink.Samples()
	med := medianSegmentCorrelation(src.samples(), got[media.SampleRate/2:])
	t.Logf("alice's phone hears bob: correlation %.3f", med)
	if !raceEnabled && med < 0.9 {
		t.Fatalf("alice's phone hears bob at correlation %.3f, want >= 0.9", med)
	}
	call.Hangup()
	waitCall(t, phoneEv, "the phone's call ends", func(c CallInfo) bool { return c.State == CallEnded })
}

// failoverPeer starts a pion node of handle on the mobile profile (relay
// only: supernode TURN first, then cloud) with cloud as its cloud relay,
// and the path checks of a desktop call (1.5 s to notice a dead path).
func (r *browserRig) failoverPeer(t *testing.T, handle string, cloud *cloudrelay.Relay, auto func(CallInfo) (CallOptions, error)) *Node {
	t.Helper()
	mc := loopbackMedia
	mc.DisconnectedTimeout, mc.KeepaliveInterval = 1500*time.Millisecond, 500*time.Millisecond
	return startNodeWith(t, Config{Home: initHome(t, handle), Listen: nodetest.Loopback, Bootstrap: []peer.AddrInfo{r.sn.AddrInfo()},
		Media: mc, Profile: ProfileMobile, AutoAnswer: auto,
		CloudRelays: []peer.AddrInfo{{ID: cloud.ID(), Addrs: cloud.Host().Addrs()}}})
}

// waitTier waits until c's media goes through tier, and returns how long
// that took.
func waitTier(t *testing.T, c *Call, tier string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if st := c.Info().Stats; st != nil && st.Tier == tier {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("the call is not on the %s tier within %v: %+v", tier, d, c.Info().Stats)
		}
		time.Sleep(20 * time.Millisecond) // polling the call's statistics, as the CLI does
	}
}

// heardAgain waits, after a move, until the last 2 s at sink correlate
// >= 0.9 with the page's microphone (the jitter buffer plays concealment
// while nothing arrives, so the sink grows either way), for at most secs
// seconds of new audio beyond the first 2, and returns that correlation
// (it logs how much audio the node played before it heard the page again).
func (r *browserRig) heardAgain(t *testing.T, sink *media.CaptureSink, secs int, what string) float64 {
	t.Helper()
	const window = 2 * media.SampleRate
	start := sink.Len()
	wctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+10)*time.Second)
	defer cancel()
	var med, low float64
	for want := start + window; ; want += media.SampleRate / 2 {
		if err := sink.Wait(wctx, want); err != nil {
			t.Fatalf("%s: no audio from the page after the move: %v (last 2 s correlated %.3f)", what, err, med)
		}
		got := sink.Samples()
		med, low = media.LoopCorrelation(r.mic, got[len(got)-window:])
		if raceEnabled {
			t.Logf("%s: -race: audio quality not judged (%.3f)", what, med)
			return med
		}
		if med >= 0.9 {
			break
		}
		if want-start >= window+secs*media.SampleRate {
			t.Fatalf("%s: after the move the node hears the page at correlation %.3f, want >= 0.9 within %d s", what, med, secs+2)
		}
	}
	t.Logf("%s: the last 2 s correlate %.3f with the page's microphone (lowest half second %.3f), %.1f s after the move",
		what, med, low, float64(sink.Len()-start)/media.SampleRate)
	return med
}

// browserFailoverNodeCalls: dave, a pion node on the mobile profile, calls
// the page through the cloud relay; the cloud relay dies mid-call; dave
// restarts ICE (the caller does), the page answers the restart offer over
// the WebSocket, and the call goes on through the supernode's TURN: dave
// hears the page's microphone again, and the page hears dave's tone.
func (r *browserRig) browserFailoverNodeCalls(t *testing.T) {
	ctx := context.Background()
	cloud := startCloudRelay(t)
	dave := r.failoverPeer(t, "dave", cloud, nil)
	r.open(t, "call")
	tone, err := media.ToneSource(browserTone, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	sink := media.NewCaptureSink(0)
	call, err := dave.Call(ctx, "alice", CallOptions{Source: tone, Sink: sink, Path: "cloud,supernode"})
	if err != nil {
		t.Fatal(err)
	}
	defer call.Hangup()
	r.waitJS(t, "the page rings", `!document.getElementById('ringing').hidden`, 20*time.Second)
	r.eval(t, `document.getElementById('answer').click()`)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sink.Wait(wctx, media.SampleRate); err != nil {
		t.Fatalf("dave does not hear the page: %v (%+v)", err, call.Info())
	}
	waitTier(t, call, TierCloud, 5*time.Second)
	cloud.Close()
	// 10 s, not the 5 s of two pion nodes: Chromium offers host candidates
	// the relay refuses, and pion's TURN client asks again for them on the
	// dead relay inside dave's ICE agent's loop, each time until a
	// retransmission finds the socket failed (media/relaysilence.go; about
	// 4 s in all). Before that socket failed, the asking blocked the loop
	// about 8 s at a time and the move took 16.7 s, which this deadline
	// catches.
	d := 10 * time.Second
	if raceEnabled {
		d = 30 * time.Second // -race slows pion's TURN and ICE several times over
	}
	moved := waitTier(t, call, TierSupernode, d)
	r.heardAgain(t, sink, 3, "dave")
	r.waitHz(t, browserTone, 10*time.Second)
	info := call.Info()
	t.Logf("cloud relay killed: the call is on the supernode tier after %v, %d ICE restart(s); paths %+v", moved.Round(time.Millisecond), info.Stats.ICERestarts, info.Paths)
	if info.Stats.ICERestarts < 1 {
		t.Fatalf("the call moved without an ICE restart: %+v", info.Stats)
	}
	aliceEv, stop := r.alice.Subscribe()
	defer stop()
	call.Hangup()
	waitCall(t, aliceEv, "the page's leg ends", func(c CallInfo) bool { return c.State == CallEnded })
}

// browserFailoverPageCalls: the page calls erin, a pion node on the mobile
// profile, whose media goes through the supernode's TURN; the supernode's
// TURN dies mid-call; the page's RTCPeerConnection notices, the web app's
// call machine (the caller's) asks the page for an ICE-restart offer, and
// the call goes on through erin's cloud relay: erin hears the page again.
func (r *browserRig) browserFailoverPageCalls(t *testing.T) {
	cloud := startCloudRelay(t)
	sink := media.NewCaptureSink(0)
	erinEv, auto := answerInto(sink)
	erin := r.failoverPeer(t, "erin", cloud, auto)
	r.open(t, "call")
	r.eval(t, `parley.startCall('erin')`)
	call := answeredOnSupernodeTURN(t, erin, erinEv, sink)
	defer call.Hangup()
	if err := r.sn.TURN().Close(); err != nil {
		t.Logf("closing the supernode's TURN: %v", err)
	}
	moved := waitTier(t, call, TierCloud, 15*time.Second)
	r.heardAgain(t, sink, 3, "erin")
	ac, err := r.alice.FindCall(call.Info().ID)
	if err != nil {
		t.Fatal(err)
	}
	info := ac.Info()
	t.Logf("supernode TURN killed: the call is on the cloud tier after %v; the page's leg: %d ICE restart(s), paths %+v",
		moved.Round(time.Millisecond), info.Stats.ICERestarts, info.Paths)
	if info.Stats.ICERestarts < 1 || len(info.Paths) < 2 {
		t.Fatalf("the page's leg moved without an ICE restart or a new path: %+v, paths %+v", info.Stats, info.Paths)
	}
	r.eval(t, `document.getElementById('hangup').click()`)
	select {
	case <-call.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("erin's call did not end on the page's hangup")
	}
}

// answerInto is an AutoAnswer that plays each call into sink and tells
// its ID on ids.
func answerInto(sink *media.CaptureSink) (ids <-chan string, auto func(CallInfo) (CallOptions, error)) {
	ch := make(chan string, 1)
	return ch, func(c CallInfo) (CallOptions, error) {
		ch <- c.ID
		return CallOptions{Sink: sink}, nil
	}
}

// answeredOnSupernodeTURN waits for n to auto-answer the page's call (its
// ID on ids), to hear the page at sink, and for the call to go through
// the supernode's TURN.
func answeredOnSupernodeTURN(t *testing.T, n *Node, ids <-chan string, sink *media.CaptureSink) *Call {
	t.Helper()
	var id string
	select {
	case id = <-ids:
	case <-time.After(20 * time.Second):
		t.Fatal("the callee did not get the page's call")
	}
	call, err := n.FindCall(id)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.Wait(wctx, media.SampleRate); err != nil {
		call.Hangup()
		t.Fatalf("the callee does not hear the page: %v (%+v)", err, call.Info())
	}
	waitTier(t, call, TierSupernode, 5*time.Second)
	return call
}

// waitHz waits until the page's analyser hears hz (within 5 Hz).
func (r *browserRig) waitHz(t *testing.T, hz float64, d time.Duration) {
	t.Helper()
	var got float64
	var err error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		tctx, cancel := context.WithTimeout(r.tab, 5*time.Second)
		got, err = chromedp.Run(tctx, chromedp.Evaluate[float64](`parley.rtc.dominantHz()`))
		cancel()
		if err == nil && math.Abs(got-hz) <= 5 {
			t.Logf("the page hears %.1f Hz", got)
			return
		}
		time.Sleep(200 * time.Millisecond) // the analyser fills as audio plays
	}
	t.Fatalf("the page hears %.1f Hz (%v), want %.0f ± 5 Hz", got, err, hz)
}
