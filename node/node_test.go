package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/supernode"
)

var loopback = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// quietLogger discards the nodes' logs, or with PARLEY_TEST_DEBUG=1 writes
// them all to stderr.
var quietLogger = nodetest.Logger

// startSupernodeWith is the one supernode starter of node's tests: a
// supernode of cfg (newSupernode), closed when t ends.
func startSupernodeWith(t testing.TB, cfg supernode.Config) *supernode.Supernode {
	t.Helper()
	if cfg.Home == "" {
		cfg.Home = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = nodetest.FailLogger(t, "supernode")
	}
	return nodetest.Start(t, "supernode", func() (*supernode.Supernode, error) { return newSupernode(cfg) })
}

// newSupernode starts a supernode of cfg, listening on loopback (TCP and
// QUIC) and logging to quietLogger where cfg leaves those unset, for a
// test that stops and restarts it itself.
func newSupernode(cfg supernode.Config) (*supernode.Supernode, error) {
	if cfg.Listen == nil {
		cfg.Listen = loopback
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	return supernode.New(context.Background(), cfg)
}

func startSupernode(t testing.TB) *supernode.Supernode {
	t.Helper()
	return startSupernodeWith(t, supernode.Config{})
}

// startNodeWith is the one node starter of node's tests: a node of cfg,
// listening on loopback (TCP and QUIC) and logging to the test's
// FailLogger where cfg leaves those unset; closed when t ends. The helpers below name the
// configurations the tests share.
func startNodeWith(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = loopback
	}
	if cfg.Logger == nil {
		name := "node"
		if id, err := LoadIdentity(cfg.Home); err == nil {
			name = id.Handle() + "/" + id.DeviceName()
		}
		cfg.Logger = nodetest.FailLogger(t, name)
	}
	return nodetest.Start(t, "node in "+cfg.Home, func() (*Node, error) { return Start(context.Background(), cfg) })
}

func initHome(t testing.TB, handle string) string {
	t.Helper()
	home := t.TempDir()
	if _, err := InitIdentity(home, handle, handle+"-laptop", time.Now()); err != nil {
		t.Fatal(err)
	}
	return home
}

func startNode(t *testing.T, home string, sn *supernode.Supernode) *Node {
	t.Helper()
	return startNodeWith(t, Config{Home: home, Bootstrap: []peer.AddrInfo{sn.AddrInfo()},
		RetryInterval: 100 * time.Millisecond, BootstrapTimeout: 10 * time.Second})
}

// waitMessages collects message events until want bodies arrived or the deadline passes.
func waitMessages(t *testing.T, ch <-chan Event, want int, d time.Duration) []Message {
	t.Helper()
	var got []Message
	timeout := time.After(d)
	for len(got) < want {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("event stream closed after %d of %d messages", len(got), want)
			}
			if e.Type == "message" {
				got = append(got, *e.Message)
			}
		case <-timeout:
			t.Fatalf("got %d of %d messages within %s", len(got), want, d)
		}
	}
	return got
}

func TestNetworkResolveChatRestart(t *testing.T) {
	sn := startSupernode(t)
	aliceHome, bobHome, carolHome := initHome(t, "alice"), initHome(t, "bob"), initHome(t, "carol")
	alice := startNode(t, aliceHome, sn)
	bob := startNode(t, bobHome, sn)
	carol := startNode(t, carolHome, sn)
	ctx := context.Background()
	parent := t

	t.Run("resolve", func(t *testing.T) {
		for _, n := range []*Node{alice, bob, carol} {
			for _, target := range []*Node{alice, bob, carol} {
				who, err := n.Resolve(ctx, target.Identity().Handle())
				if err != nil {
					t.Fatalf("%s resolves %s: %v", n.Identity().Handle(), target.Identity().Handle(), err)
				}
				if len(who.Devices) != 1 || who.Devices[0].PeerID != target.ID().String() {
					t.Fatalf("%s: devices %v, want %s", who.Handle, who.Devices, target.ID())
				}
				if who.Fingerprint != target.Identity().Fingerprint() {
					t.Fatalf("fingerprint mismatch for %s", who.Handle)
				}
			}
		}
		if _, err := alice.Resolve(ctx, "nobody"); !errors.Is(err, discovery.ErrNoSuchHandle) {
			t.Fatalf("resolve unknown handle: %v, want ErrNoSuchHandle", err)
		}
	})

	t.Run("chat both ways", func(t *testing.T) {
		bobEvents, stopB := bob.Subscribe()
		defer stopB()
		aliceEvents, stopA := alice.Subscribe()
		defer stopA()
		const n = 10
		for i := 0; i < n; i++ {
			res, err := alice.Send(ctx, "bob", fmt.Sprintf("a->b %d", i))
			if err != nil || len(res.Delivered) != 1 || len(res.Queued) != 0 {
				t.Fatalf("alice send %d: %+v, %v", i, res, err)
			}
			if _, err := bob.Send(ctx, "alice", fmt.Sprintf("b->a %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		for _, got := range [][]Message{waitMessages(t, bobEvents, n, 10*time.Second), waitMessages(t, aliceEvents, n, 10*time.Second)} {
			for i, m := range got {
				if !strings.HasSuffix(m.Body, fmt.Sprintf(" %d", i)) {
					t.Fatalf("message %d out of order: %q", i, m.Body)
				}
			}
		}
		// carol is not part of the conversation and saw nothing of it.
		if h, _ := carol.History(ctx, "alice", 0); len(h) != 0 {
			t.Fatalf("carol has %d messages of a conversation she is not in", len(h))
		}
		ha, _ := alice.History(ctx, "bob", 0)
		hb, _ := bob.History(ctx, "alice", 0)
		if len(ha) != 2*n || len(hb) != 2*n {
			t.Fatalf("history sizes alice=%d bob=%d, want %d", len(ha), len(hb), 2*n)
		}
		for i := range ha {
			if ha[i].ID != hb[i].ID {
				t.Fatalf("histories differ at %d: %s vs %s", i, ha[i].Body, hb[i].Body)
			}
		}
	})

	t.Run("history survives a restart", func(t *testing.T) {
		before, _ := bob.History(ctx, "alice", 0)
		bob.Close()
		bob2 := startNode(parent, bobHome, sn)
		after, err := bob2.History(ctx, "alice", 0)
		if err != nil || len(after) != len(before) || len(after) == 0 {
			t.Fatalf("after restart %d messages (%v), before %d", len(after), err, len(before))
		}
		// The restarted bob is reachable again at its new address.
		ev, stop := bob2.Subscribe()
		defer stop()
		if _, err := alice.Send(ctx, "bob", "after restart"); err != nil {
			t.Fatal(err)
		}
		if got := waitMessages(t, ev, 1, 15*time.Second); got[0].Body != "after restart" {
			t.Fatalf("got %q", got[0].Body)
		}
		bob = bob2
	})

	t.Run("duplicate delivery stored once", func(t *testing.T) {
		res, err := alice.Send(ctx, "carol", "once")
		if err != nil || len(res.Delivered) != 1 {
			t.Fatalf("send: %+v %v", res, err)
		}
		// Replay the same envelope twice on a new stream, as a retry after a
		// lost ack would.
		p := &Payload{Kind: kindMessage, ID: res.Message.ID, Conv: res.Message.Conv, Lamport: res.Message.Lamport, SentMS: res.Message.SentMS, Body: "once"}
		env, err := sealEnvelope(alice.Identity(), p, p.ID, carol.Identity().Self())
		if err != nil {
			t.Fatal(err)
		}
		s, err := alice.Host().NewStream(ctx, carol.ID(), ChatProtocol)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			wire.WriteJSON(s, chatFrame{Type: "env", Env: env}, MaxChatFrame)
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := wire.ReadFrame(s, MaxChatFrame)
			if err != nil {
				t.Fatalf("replay %d: %v", i, err)
			}
			if f, err := decodeChatFrame(b); err != nil || f.Err != "" {
				t.Fatalf("replay %d not acknowledged: %+v %v", i, f, err)
			}
		}
		s.Close()
		h, _ := carol.History(ctx, "alice", 0)
		if len(h) != 1 || h[0].Body != "once" {
			t.Fatalf("carol's history after a duplicate: %+v", h)
		}
	})

	t.Run("malformed frames reset the stream, node keeps serving", func(t *testing.T) {
		for _, payload := range [][]byte{
			{0xff, 0xff, 0xff, 0xff},              // declared 4 GiB
			{0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}, // not JSON
		} {
			s, err := carol.Host().NewStream(ctx, bob.ID(), ChatProtocol)
			if err != nil {
				t.Fatal(err)
			}
			s.Write(payload)
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := wire.ReadFrame(s, MaxChatFrame); err == nil {
				t.Fatal("bob answered a malformed frame")
			}
			s.Close()
		}
		// carol forges a message as alice: she can only sign with her own
		// device key, which alice's record does not list.
		p := &Payload{Kind: kindMessage, ID: "abcd", Conv: "dm:alice:bob", Lamport: 99, SentMS: 1, Body: "forged"}
		env, _ := sealEnvelope(carol.Identity(), p, p.ID, bob.Identity().Self())
		var e Envelope
		json.Unmarshal(env, &e)
		e.From, e.Record = "alice", alice.Identity().Record()
		forged, _ := json.Marshal(&e)
		s, err := carol.Host().NewStream(ctx, bob.ID(), ChatProtocol)
		if err != nil {
			t.Fatal(err)
		}
		wire.WriteJSON(s, chatFrame{Type: "env", Env: forged}, MaxChatFrame)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := wire.ReadFrame(s, MaxChatFrame); err == nil {
			if f, _ := decodeChatFrame(b); f == nil || f.Err == "" {
				t.Fatal("bob acknowledged a message carol forged as alice")
			}
		}
		s.Close()
		if h, _ := bob.History(ctx, "alice", 0); h[len(h)-1].Body == "forged" {
			t.Fatal("forged message stored")
		}
		if res, err := carol.Send(ctx, "bob", "still serving"); err != nil || len(res.Delivered) != 1 {
			t.Fatalf("bob stopped serving: %+v %v", res, err)
		}
	})
}

func TestConflictingHandleClaimRefused(t *testing.T) {
	sn := startSupernode(t)
	startNode(t, initHome(t, "alice"), sn)
	rival := initHome(t, "alice") // another account claims the same handle
	_, err := Start(context.Background(), Config{Home: rival, Listen: loopback, Bootstrap: []peer.AddrInfo{sn.AddrInfo()}, Logger: quietLogger()})
	if !errors.Is(err, discovery.ErrHandleTaken) {
		t.Fatalf("rival claim: %v, want ErrHandleTaken", err)
	}
}

func TestSecondDaemonOnSameHomeRefused(t *testing.T) {
	sn := startSupernode(t)
	home := initHome(t, "alice")
	startNode(t, home, sn)
	_, err := Start(context.Background(), Config{Home: home, Listen: loopback, Bootstrap: []peer.AddrInfo{sn.AddrInfo()}, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("second daemon: %v", err)
	}
}

func TestUnreachableBootstrapStartsOffline(t *testing.T) {
	home := initHome(t, "alice")
	// A peer ID nobody runs, on a port nothing listens on.
	bogus, _ := discovery.ParseAddrs([]string{"/ip4/127.0.0.1/tcp/9/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"})
	start := time.Now()
	n, err := Start(context.Background(), Config{Home: home, Listen: loopback, Bootstrap: bogus, BootstrapTimeout: 3 * time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start with an unreachable bootstrap: %v, want an offline node", err)
	}
	defer n.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("bounded wait took %s", el)
	}
	st := n.Status()
	if st.Online || !strings.Contains(st.OfflineReason, discovery.ErrNoBootstrap.Error()) || strings.Contains(st.OfflineReason, "<peer.ID") {
		t.Fatalf("status: %+v", st)
	}
	t.Logf("offline: %s", st.OfflineReason)
}

func TestNoGoroutineLeftBehind(t *testing.T) {
	sn := startSupernode(t)
	round := 0
	run := func() {
		round++
		a := initHome(t, fmt.Sprintf("alice%d", round))
		b := initHome(t, fmt.Sprintf("bob%d", round))
		na := startNode(t, a, sn)
		nb := startNode(t, b, sn)
		if _, err := na.Send(context.Background(), fmt.Sprintf("bob%d", round), "hi"); err != nil {
			t.Fatal(err)
		}
		na.Close()
		nb.Close()
	}
	run() // warm up package-level goroutines (quic, libp2p globals)
	base := runtime.NumGoroutine()
	run()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines after close, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
