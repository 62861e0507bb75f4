package node

import (
	"slices"
	"testing"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/discovery/discoverytest"
)

// A peer in the host cache is a bootstrap peer, never a trusted witness of
// handle claims: the cache keeps any DHT server the device was connected
// to, a rogue one too, and a few rogue "witnesses" trusted after a restart
// would let their back-dated witnesses decide who owns a handle.
func TestHostCacheNotTrusted(t *testing.T) {
	net := startSupernodes(t, 1)
	home := initHome(t, "alice")
	rogue := discoverytest.RogueInHostCache(t, home)
	n := startOnWith(t, home, net.infos())
	trusted := discovery.ValidatorOf(n.dht).Trusted
	if slices.Contains(trusted, rogue) {
		t.Fatalf("a peer from the host cache is trusted to witness claims: %v", trusted)
	}
	if !slices.Contains(trusted, net.sns[0].ID()) {
		t.Fatalf("the configured supernode is not trusted: %v", trusted)
	}
}
