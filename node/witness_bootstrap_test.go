package node

import (
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/discovery"
)

// A peer in the host cache is a bootstrap peer, never a trusted witness of
// handle claims: the cache keeps any DHT server the device was connected
// to, a rogue one too, and a few rogue "witnesses" trusted after a restart
// would let their back-dated witnesses decide who owns a handle.
func TestHostCacheNotTrusted(t *testing.T) {
	net := startSupernodes(t, 1)
	home := initHome(t, "alice")
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
	n := startOnWith(t, home, net.infos())
	trusted := discovery.ValidatorOf(n.dht).Trusted
	if slices.Contains(trusted, rogue) {
		t.Fatalf("a peer from the host cache is trusted to witness claims: %v", trusted)
	}
	if !slices.Contains(trusted, net.sns[0].ID()) {
		t.Fatalf("the configured supernode is not trusted: %v", trusted)
	}
}
