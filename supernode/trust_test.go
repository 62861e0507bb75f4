package supernode

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/discovery"
)

// A supernode trusts the claim witnesses of itself and of its configured
// bootstrap supernodes only, never of a peer in its host cache: the cache
// keeps any DHT server that was connected, and rogue DHT servers trusted
// after a restart made a back-dated claim win a PUT against the real
// owner's record (seen by hand against a clean clone).
func TestHostCacheNotTrustedBySupernode(t *testing.T) {
	boot := startTestSupernode(t)
	home := t.TempDir()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := discovery.LoadHostCache(home, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Seen(peer.AddrInfo{ID: rogue, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/9")}}, time.Now())
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	sn, err := New(context.Background(), Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{boot.AddrInfo()}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	trusted := discovery.ValidatorOf(sn.DHT()).Trusted
	if slices.Contains(trusted, rogue) {
		t.Fatalf("a peer from the host cache is trusted to witness claims: %v", trusted)
	}
	if !slices.Contains(trusted, boot.ID()) || !slices.Contains(trusted, sn.ID()) {
		t.Fatalf("the supernode does not trust itself and its bootstrap supernode: %v", trusted)
	}
}
