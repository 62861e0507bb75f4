package discovery

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	"github.com/parley-net/parley/internal/nodetest"
)

// fakePeer is a valid peer ID nobody holds the key of.
func fakePeer(t testing.TB) peer.ID {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return peer.ID(h)
}

// closeTo grinds a fake peer ID whose distance to key has at least bits
// leading zero bits: closer than any honest server of a small network.
func closeTo(t testing.TB, key string, bits int) peer.ID {
	t.Helper()
	target := kb.ConvertKey(key)
	for {
		p := fakePeer(t)
		if kb.CommonPrefixLen(target, kb.ConvertPeerID(p)) >= bits {
			return p
		}
	}
}

// TestWalkBookkeeping drives the walk's state by hand: it asks the closest
// servers first, never more than asked for, replaces a server that failed
// by the next closest, converges when the beta closest have answered, then
// follows up the k closest once without chasing what they name, and
// returns the answers of the k closest that answered.
func TestWalkBookkeeping(t *testing.T) {
	const key = "/handle/alice"
	w := newWalk(fakePeer(t), key, 4, 2)
	var ps []peer.ID
	for range 7 {
		ps = append(ps, fakePeer(t))
	}
	if n := w.hear(append(ps, ps[0], w.self)...); n != 7 {
		t.Fatalf("heard %d new servers, want 7 (a repeat and itself are not new)", n)
	}
	s := kb.SortClosestPeers(ps, kb.ConvertKey(key))
	expect := func(got, want []peer.ID) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("asked %v, want %v", got, want)
		}
	}

	expect(w.next(2), s[:2])
	if w.done() {
		t.Fatal("done before any answer")
	}
	w.answered(s[0], []byte("v"))
	w.failed(s[1])
	// The 4 closest not failed are now 0, 2, 3, 4.
	expect(w.next(10), []peer.ID{s[2], s[3], s[4]})
	if w.done() {
		t.Fatal("done before the 2 closest have answered")
	}
	// A closer server heard before the walk converged is asked.
	near := closeTo(t, key, 16)
	w.hear(near)
	expect(w.next(10), []peer.ID{near})
	w.answered(near, nil)
	w.answered(s[2], nil)
	if w.done() {
		t.Fatal("done with the follow-up (3, 4) not answered")
	}
	// Converged: a closer server heard now is not chased.
	w.hear(closeTo(t, key, 20))
	expect(w.next(10), nil)
	w.answered(s[3], nil)
	w.failed(s[4])
	if !w.done() {
		t.Fatal("not done when the follow-up has answered or failed")
	}
	got := w.answers()
	if len(got) != 4 || got[0].p != near || got[1].p != s[0] || !bytes.Equal(got[1].raw, []byte("v")) || got[2].p != s[2] || got[3].p != s[3] {
		t.Fatalf("answers %d, want near, 0, 2, 3", len(got))
	}
}

// TestWalkAlso: a server asked also (a trusted supernode) is asked first
// whatever its distance, the walk waits for it, and its answer counts
// beside the k closest'.
func TestWalkAlso(t *testing.T) {
	const key = "/handle/alice"
	w := newWalk(fakePeer(t), key, 2, 1)
	near1, near2 := closeTo(t, key, 12), closeTo(t, key, 12)
	var far peer.ID
	for far == "" || kb.CommonPrefixLen(kb.ConvertKey(key), kb.ConvertPeerID(far)) > 0 {
		far = fakePeer(t)
	}
	w.hearAlso(far)
	w.hear(near1, near2)
	if got := w.next(1); len(got) != 1 || got[0] != far {
		t.Fatalf("asked %v first, want the far trusted server", got)
	}
	w.next(10)
	w.answered(near1, nil)
	w.answered(near2, nil)
	if w.done() {
		t.Fatal("done before the trusted server answered")
	}
	w.answered(far, []byte("t"))
	if !w.done() {
		t.Fatal("not done")
	}
	if got := w.answers(); len(got) != 3 || got[2].p != far {
		t.Fatalf("%d answers, want the 2 closest and the trusted one last", len(got))
	}
}

// TestWalkRequestBound: however many servers answers name, one walk sends
// at most maxWalkRequests requests.
func TestWalkRequestBound(t *testing.T) {
	w := newWalk(fakePeer(t), "/handle/bob", maxLookupPeers, walkBeta)
	sent := 0
	for range 1000 {
		var named []peer.ID
		for range maxCloserPeers {
			named = append(named, fakePeer(t))
		}
		w.hear(named...)
		next := w.next(walkAlpha)
		if len(next) == 0 {
			break
		}
		sent += len(next)
		for _, p := range next {
			w.failed(p)
		}
	}
	if sent != maxWalkRequests {
		t.Fatalf("sent %d requests, want the bound %d", sent, maxWalkRequests)
	}
}

// FuzzReadAnswer: whatever a server sends, what a walk takes from it is
// bounded, and a value filed under another key is never taken.
func FuzzReadAnswer(f *testing.F) {
	const key = "/handle/carol"
	m := pb.NewMessage(pb.Message_GET_VALUE, []byte(key), 0)
	m.Record = &recpb.Record{Key: []byte(key), Value: []byte("value")}
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/1")
	m.CloserPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: fakePeer(f), Addrs: []ma.Multiaddr{addr, addr}}})
	seed, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		framed := append(binary.AppendUvarint(nil, uint64(len(b))), b...)
		var resp pb.Message
		if err := pbio.NewDelimitedReader(bytes.NewReader(framed), maxKadMessage).ReadMsg(&resp); err != nil {
			return // refused: too big or not a message
		}
		raw, closer := readAnswer(&resp, key)
		if raw != nil && string(resp.GetRecord().GetKey()) != key {
			t.Fatal("took a value filed under another key")
		}
		if len(closer) > maxCloserPeers {
			t.Fatalf("took %d servers", len(closer))
		}
		for _, ai := range closer {
			if len(ai.Addrs) > maxPeerAddrs || ai.ID.Validate() != nil {
				t.Fatalf("took %v", ai)
			}
		}
	})
}

// testDHT is a real libp2p host on 127.0.0.1 with parley's DHT.
func testDHT(t *testing.T, server bool, boot []peer.AddrInfo, opts ...dht.Option) (host.Host, *dht.IpfsDHT) {
	t.Helper()
	h := nodetest.Start(t, "host", func() (host.Host, error) {
		return libp2p.New(libp2p.ListenAddrStrings(nodetest.Loopback...))
	})
	d := nodetest.Start(t, "DHT", func() (*dht.IpfsDHT, error) {
		return NewDHT(context.Background(), h, DHTConfig{Server: server, Bootstrap: boot, Now: func() time.Time { return t0 }, Options: opts})
	})
	return h, d
}

func infoOf(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

// servers starts n DHT servers, each bootstrapping from the one before.
func servers(t *testing.T, n int) []host.Host {
	var hs []host.Host
	var boot []peer.AddrInfo
	for range n {
		h, _ := testDHT(t, true, boot)
		hs = append(hs, h)
		boot = []peer.AddrInfo{infoOf(h)}
	}
	return hs
}

// published starts n DHT servers and has a device publish handle's record
// through them; it returns the servers and the device's record entry.
func published(t *testing.T, n int, handle string) ([]peer.AddrInfo, Device) {
	t.Helper()
	var all []peer.AddrInfo
	for _, h := range servers(t, n) {
		all = append(all, infoOf(h))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, pubD := testDHT(t, false, all)
	nodetest.Eventually(t, 10*time.Second, "the publisher knows the servers", func() bool { return pubD.RoutingTable().Size() >= n/2 })
	acct, dev := newAccount(t), newDevice(t)
	if err := Publish(ctx, pubD, signed(t, acct, handle, 1, t0, dev)); err != nil {
		t.Fatal(err)
	}
	return all, dev
}

// TestLookupWalks: a device that knows one server finds a handle whose
// record lives on servers it has never heard of, by walking, and weighs
// the answers of several servers.
func TestLookupWalks(t *testing.T) {
	all, dev := published(t, 10, "dana")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The asker knows only the first server and does not refresh its
	// routing table, so every other server it asks it heard of in answers.
	_, d := testDHT(t, false, all[:1], dht.DisableAutoRefresh())
	nodetest.Eventually(t, 10*time.Second, "the asker knows its server", func() bool { return d.RoutingTable().Size() == 1 })
	ectx, events := routing.RegisterForQueryEvents(ctx)
	asked := map[peer.ID]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			if ev.Type == routing.SendingQuery {
				asked[ev.ID] = true
			}
		}
	}()
	l, err := LookupHandle(ectx, d, "dana")
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if l.Best.Handle != "dana" || len(l.Best.Devices) != 1 || l.Best.Devices[0].PeerID != dev.PeerID {
		t.Fatalf("resolved %+v", l.Best)
	}
	if len(asked) < 3 || l.Answered < 2 {
		t.Fatalf("asked %d servers, %d answered with the record: not a walk", len(asked), l.Answered)
	}
}

// roguePeer answers every request of the DHT's protocol with a record
// filed under another key and with the servers honest, then every server
// named in flood: peers nobody can reach, ground to be closer to the key
// than any honest one.
func roguePeer(t *testing.T, flood []peer.ID, honest ...peer.AddrInfo) host.Host {
	t.Helper()
	h := nodetest.Start(t, "rogue", func() (host.Host, error) {
		return libp2p.New(libp2p.ListenAddrStrings(nodetest.Loopback...))
	})
	dead := ma.StringCast("/ip4/127.0.0.1/tcp/1")
	named := honest
	for _, p := range flood {
		addrs := make([]ma.Multiaddr, 3*maxPeerAddrs)
		for i := range addrs {
			addrs[i] = dead
		}
		named = append(named, peer.AddrInfo{ID: p, Addrs: addrs})
	}
	h.SetStreamHandler(kadProtocol, func(s network.Stream) {
		defer s.Close()
		r, w := pbio.NewDelimitedReader(s, maxKadMessage), pbio.NewDelimitedWriter(s)
		for {
			var req pb.Message
			if r.ReadMsg(&req) != nil {
				return
			}
			resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
			resp.Record = &recpb.Record{Key: []byte("/handle/someone-else"), Value: []byte("forged")}
			resp.CloserPeers = pb.RawPeerInfosToPBPeers(named)
			if w.WriteMsg(resp) != nil {
				return
			}
		}
	})
	return h
}

// TestWalkThroughRogueFlood: the one server a device knows is a rogue. It
// names a hundred unreachable peers closer to the key than any honest
// server (the walk takes 40: one honest server, named first, and 39 of the
// flood), and files a record under the wrong key. The walk must ask its
// way through the flood before the honest server, the farthest it knows:
// that costs failed requests, within its bound, and the lookup still finds
// the honest record. (With an honest server known from the start, the
// walk may converge before the rogue answers, and test nothing.)
func TestWalkThroughRogueFlood(t *testing.T) {
	all, dev := published(t, 6, "erin")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var flood []peer.ID
	for range 5 * maxCloserPeers / 2 {
		flood = append(flood, closeTo(t, HandleKey("erin"), 10))
	}
	rogue := roguePeer(t, flood, all[0])
	_, d := testDHT(t, false, nil, dht.DisableAutoRefresh())
	d.Host().Peerstore().AddAddrs(rogue.ID(), rogue.Addrs(), time.Hour)
	if _, err := d.RoutingTable().TryAddPeer(rogue.ID(), true, false); err != nil {
		t.Fatal(err)
	}

	ectx, events := routing.RegisterForQueryEvents(ctx)
	sent, failed := 0, 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			switch ev.Type {
			case routing.SendingQuery:
				sent++
			case routing.QueryError:
				failed++
			}
		}
	}()
	start := time.Now()
	l, err := LookupHandle(ectx, d, "erin")
	took := time.Since(start)
	cancel()
	<-done
	if err != nil {
		t.Fatalf("lookup through the flood: %v (%d requests, %d failed, %s)", err, sent, failed, took)
	}
	if l.Best.Devices[0].PeerID != dev.PeerID {
		t.Fatalf("resolved %+v", l.Best)
	}
	if sent > maxWalkRequests || failed < maxCloserPeers/2 {
		t.Fatalf("%d requests (bound %d), %d failed: the flood was not walked through", sent, maxWalkRequests, failed)
	}
	t.Logf("%d requests, %d to unreachable peers, %s", sent, failed, took.Round(time.Millisecond))
}
