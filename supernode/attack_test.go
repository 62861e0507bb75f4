package supernode

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/mailbox"
)

// startSupernodeWith is the one supernode starter of supernode's tests: a
// supernode of cfg (newTestSupernode), closed when t ends.
func startSupernodeWith(t testing.TB, cfg Config) *Supernode {
	t.Helper()
	if cfg.Home == "" {
		cfg.Home = t.TempDir()
	}
	return nodetest.Start(t, "supernode", func() (*Supernode, error) { return newTestSupernode(cfg) })
}

// newTestSupernode starts a supernode of cfg listening on loopback and
// logging to quiet where cfg leaves those unset, for a test that stops and
// restarts it itself.
func newTestSupernode(cfg Config) (*Supernode, error) {
	if cfg.Listen == nil {
		cfg.Listen = nodetest.Loopback
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	return New(context.Background(), cfg)
}

func startTestSupernode(t *testing.T, bootstrap ...peer.AddrInfo) *Supernode {
	t.Helper()
	return startSupernodeWith(t, Config{Bootstrap: bootstrap})
}

// startTestSupernodeIn starts a supernode of home.
func startTestSupernodeIn(t *testing.T, home string, bootstrap ...peer.AddrInfo) *Supernode {
	t.Helper()
	return startSupernodeWith(t, Config{Home: home, Bootstrap: bootstrap})
}

func plainHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestAttackRogueSupernodeDeletesMail: a rogue supernode, in the honest
// supernode's DHT routing table, saw the ID of carol's envelope for dave
// and tells the honest supernode to delete it, with no proof and with a
// proof it signed itself. dave still gets the envelope.
func TestAttackRogueSupernodeDeletesMail(t *testing.T) {
	honest := startTestSupernode(t)
	rogue := startTestSupernode(t, honest.AddrInfo())
	deadline := time.Now().Add(10 * time.Second)
	for !honest.isSupernode(rogue.ID()) {
		if time.Now().After(deadline) {
			t.Fatal("the rogue supernode never entered the honest one's routing table")
		}
		time.Sleep(20 * time.Millisecond)
	}
	carol, dave := plainHost(t), plainHost(t)
	ctx := context.Background()
	for _, h := range []host.Host{carol, dave} {
		if err := h.Connect(ctx, honest.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	acct := make([]byte, 32)
	rand.Read(acct)
	it := mailbox.Item{ID: "c0ffee", To: dave.ID().String(), Account: acct, From: carol.ID().String(),
		ExpiresMS: time.Now().Add(time.Hour).UnixMilli(), Env: []byte("sealed for dave")}
	if res, err := mailbox.Put(ctx, carol, honest.ID(), []mailbox.Item{it}); err != nil || res[0].Err != "" {
		t.Fatalf("put: %+v %v", res, err)
	}
	ts, sig, _ := mailbox.SignAck(rogue.Host().Peerstore().PrivKey(rogue.ID()), time.Now(), []string{"c0ffee"})
	for _, f := range []mailbox.Frame{
		{Type: "del", Device: dave.ID().String(), IDs: []string{"c0ffee"}},
		{Type: "del", Device: dave.ID().String(), IDs: []string{"c0ffee"}, TS: ts, Sig: sig},
	} {
		s, err := rogue.Host().NewStream(ctx, honest.ID(), mailbox.Protocol)
		if err != nil {
			t.Fatal(err)
		}
		wire.WriteJSON(s, f, mailbox.MaxFrame)
		s.CloseWrite()
		s.Read(make([]byte, 1)) // the honest supernode has handled it
		s.Close()
	}
	var got []string
	if _, err := mailbox.Fetch(ctx, dave, honest.ID(), dave.ID(), func(it mailbox.Item) error {
		got = append(got, it.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("dave got %v after the rogue supernode's deletes, want [c0ffee]", got)
	}
	if c, _ := honest.Mailbox().Count(); c != 0 {
		t.Fatalf("%d envelopes left after dave's own acknowledgement", c)
	}
}
