package media

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/nodetest"
)

type countClose struct{ n *atomic.Int32 }

func (c countClose) Close() error { c.n.Add(1); return nil }

// The relay sockets close relayRelease after a direct pair is selected;
// a move back to a relayed pair before then cancels it, and a relayed
// call keeps them.
func TestRelaySocketsRelease(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	r := &relaySockets{clk: clk}
	var closed atomic.Int32
	r.add(countClose{&closed})
	r.add(countClose{&closed})
	released := -1

	r.pathSelected(true, nil) // relayed: nothing scheduled
	clk.Advance(time.Minute)
	if closed.Load() != 0 {
		t.Fatal("a relayed call's sockets were closed")
	}

	r.pathSelected(false, func(n int) { released = n })
	clk.Advance(relayRelease / 2)
	r.pathSelected(true, nil) // moved back to a relay in time
	clk.Advance(time.Minute)
	if closed.Load() != 0 {
		t.Fatal("the release went ahead after the call moved back to a relay")
	}

	r.pathSelected(false, func(n int) { released = n })
	clk.Advance(relayRelease / 2)
	r.pathSelected(false, func(n int) { released = n }) // another direct pair: same schedule
	if closed.Load() != 0 {
		t.Fatal("released before relayRelease")
	}
	clk.Advance(relayRelease / 2)
	if closed.Load() != 2 || released != 2 {
		t.Fatalf("after relayRelease: %d closed, released(%d); want 2", closed.Load(), released)
	}

	// Sockets of a later gathering (an ICE restart) wait for the next
	// direct selection; stop cancels.
	r.add(countClose{&closed})
	r.pathSelected(false, nil)
	r.stop()
	clk.Advance(time.Minute)
	if closed.Load() != 2 {
		t.Fatal("stop did not cancel the release")
	}
}

// A real call whose two ends gathered relay candidates from a TURN server
// but connected directly releases them on both ends, and its audio goes
// on: the allocations are gone from the server.
func TestDirectCallReleasesRelays(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	server, stop := startTURN(t)
	defer stop()
	ice := []webrtc.ICEServer{server}
	c := newCall(t, Config{Source: SpeechLikeSource(3), ICEServers: ice},
		Config{Source: SpeechLikeSource(4), ICEServers: ice})
	c.connect(t)
	waitClosed(t, c.a.FirstAudio(), 10*time.Second, "first audio at a")
	for name, s := range map[string]*Session{"a": c.a, "b": c.b} {
		if p := s.Stats().Path; p.LocalType == "relay" || p.RemoteType == "relay" {
			t.Fatalf("%s: the call went through the relay on loopback: %+v", name, p)
		}
	}
	for name, s := range map[string]*Session{"a": c.a, "b": c.b} {
		s.relays.mu.Lock()
		opened := s.relays.opened
		s.relays.mu.Unlock()
		if opened == 0 {
			t.Fatalf("%s opened no socket to the TURN server: the test proves nothing", name)
		}
		nodetest.Eventually(t, relayRelease+5*time.Second, name+" releasing its relay sockets", func() bool {
			s.relays.mu.Lock()
			defer s.relays.mu.Unlock()
			return len(s.relays.conns) == 0
		})
	}
	before := c.a.PacketsReceived()
	nodetest.Eventually(t, 5*time.Second, "audio after the release", func() bool { return c.a.PacketsReceived() > before+25 })
	if st := c.a.State(); st != StateConnected {
		t.Fatalf("a is %v after the release, want connected", st)
	}
	c.close(t, c.a)
}
