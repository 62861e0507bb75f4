package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/media"
)

// guestInvite opens a call stream from a bare libp2p host (a guest server
// as the device sees it) to n and sends f, with a real offer when f has none.
func guestInvite(t *testing.T, n *Node, f callFrame) network.Stream {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, n.ID(), CallProtocol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	if f.SDP == "" {
		sess, err := media.NewSession(loopbackMedia)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sess.Close() })
		if f.SDP, err = sess.CreateOffer(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := wire.WriteJSON(s, f, MaxCallFrame); err != nil {
		t.Fatal(err)
	}
	return s
}

// readFrameType reads frames until one of type typ, or fails.
func readFrameType(t *testing.T, s network.Stream, typ string) *callFrame {
	t.Helper()
	for {
		f, err := readCallFrame(s, 10*time.Second)
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

// TestGuestInvite: a guest's invite rings as a guest via the server that
// sent it, with no handle; the server's hangup ends it; a guest invite that
// names a handle is refused; a device with NoGuests refuses guests.
func TestGuestInvite(t *testing.T) {
	sn := startSupernode(t)
	bob := startCallNode(t, initHome(t, "bob"), sn, nil)
	ev, stop := bob.Subscribe()
	defer stop()

	s := guestInvite(t, bob, callFrame{Type: sigInvite, Call: "0a01", Seq: 1, Guest: true})
	ring := waitCall(t, ev, "bob rings", func(c CallInfo) bool { return c.State == CallRinging })
	if ring.Guest != s.Conn().LocalPeer().String() || ring.Peer != "" {
		t.Fatalf("the ring says peer %q guest %q, want no handle, guest via %s", ring.Peer, ring.Guest, s.Conn().LocalPeer())
	}
	readFrameType(t, s, sigRinging)
	if err := wire.WriteJSON(s, callFrame{Type: sigCancel, Call: "0a01", Seq: 2, Reason: "cancelled"}, MaxCallFrame); err != nil {
		t.Fatal(err)
	}
	waitCall(t, ev, "the guest's cancel ends the ring", func(c CallInfo) bool { return c.ID == ring.ID && c.State == CallEnded })

	// A guest who names a handle: refused before anything rings.
	s = guestInvite(t, bob, callFrame{Type: sigInvite, Call: "0a02", Seq: 1, Guest: true, From: "alice"})
	if f, err := readCallFrame(s, 10*time.Second); err == nil {
		t.Fatalf("a guest invite naming a handle got %s %q, want the stream reset", f.Type, f.Reason)
	}
	if calls := bob.Calls(); len(calls) != 1 {
		t.Fatalf("bob has calls %+v, want only the first guest's", calls)
	}

	carol, err := Start(context.Background(), Config{Home: initHome(t, "carol"), Listen: loopback, Bootstrap: []peer.AddrInfo{sn.AddrInfo()},
		Logger: quietLogger(), Media: loopbackMedia, NoGuests: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { carol.Close() })
	s = guestInvite(t, carol, callFrame{Type: sigInvite, Call: "0a03", Seq: 1, Guest: true})
	if f := readFrameType(t, s, sigReject); f.Reason != rejectNoGuests {
		t.Fatalf("carol rejected with %q, want %q", f.Reason, rejectNoGuests)
	}
}
