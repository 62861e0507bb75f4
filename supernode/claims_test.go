package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

// A supernode witnesses the first time it saw each (handle, account) claim,
// never a later one, and remembers it across a restart.
func TestClaimWitnessFirstSeen(t *testing.T) {
	home := t.TempDir()
	var clock atomic.Int64
	clock.Store(time.Unix(1_800_000_000, 0).UnixMilli())
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	start := func() *Supernode {
		sn, err := newTestSupernode(Config{Home: home, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return sn
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	alice, _, _ := ed25519.GenerateKey(rand.Reader)
	mallory, _, _ := ed25519.GenerateKey(rand.Reader)
	ctx := context.Background()

	sn := start()
	ask := func(account ed25519.PublicKey) int64 {
		t.Helper()
		if err := h.Connect(ctx, sn.AddrInfo()); err != nil {
			t.Fatal(err)
		}
		w, err := discovery.RequestWitness(ctx, h, sn.ID(), "alice", account)
		if err != nil {
			t.Fatal(err)
		}
		if by, err := w.Verify("alice", account); err != nil || by != sn.ID() {
			t.Fatalf("witness by %s: %v", by, err)
		}
		return w.Seen
	}
	first := ask(alice)
	clock.Add(60_000)
	if again := ask(alice); again != first {
		t.Fatalf("a repeated claim was witnessed at %d, first seen %d", again, first)
	}
	rival := ask(mallory)
	if rival != first+60_000 {
		t.Fatalf("a rival claim was witnessed at %d, want its own first sight %d", rival, first+60_000)
	}
	sn.Close()

	clock.Add(3_600_000)
	sn = start()
	defer sn.Close()
	if got := ask(alice); got != first {
		t.Fatalf("after a restart alice's claim is witnessed at %d, want %d", got, first)
	}
	if got := ask(mallory); got != rival {
		t.Fatalf("after a restart mallory's claim is witnessed at %d, want %d", got, rival)
	}
}

// Malformed claims reset the stream; a full table refuses new claims but
// still witnesses known ones.
func TestClaimServerLimits(t *testing.T) {
	sn := startSupernodeWith(t, Config{})
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	if err := h.Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  discovery.ClaimRequest
	}{
		{"bad handle", discovery.ClaimRequest{Handle: "NOT VALID", Account: make([]byte, 32)}},
		{"short account", discovery.ClaimRequest{Handle: "alice", Account: make([]byte, 31)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := h.NewStream(ctx, sn.ID(), discovery.ClaimProtocol)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.SetDeadline(time.Now().Add(5 * time.Second))
			wire.WriteJSON(s, tc.req, discovery.MaxClaimFrame)
			if _, err := wire.ReadFrame(s, discovery.MaxClaimFrame); err == nil {
				t.Fatal("a malformed claim was witnessed")
			}
		})
	}

	c := sn.Claims()
	c.mu.Lock()
	c.limit = len(c.seen) + 1
	c.mu.Unlock()
	a, b := make([]byte, 32), make([]byte, 32)
	b[0] = 1
	if _, err := c.Witness("alice", a); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Witness("bob", b); !errors.Is(err, ErrClaimsFull) {
		t.Fatalf("a claim beyond the limit: %v, want ErrClaimsFull", err)
	}
	if _, err := c.Witness("alice", a); err != nil {
		t.Fatalf("a known claim with a full table: %v", err)
	}
}
