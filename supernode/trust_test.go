package supernode

import (
	"slices"
	"testing"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/discovery/discoverytest"
)

// A supernode trusts the claim witnesses of itself and of its configured
// bootstrap supernodes only, never of a peer in its host cache: the cache
// keeps any DHT server that was connected, and rogue DHT servers trusted
// after a restart made a back-dated claim win a PUT against the real
// owner's record (seen by hand against a clean clone).
func TestHostCacheNotTrustedBySupernode(t *testing.T) {
	boot := startTestSupernode(t)
	home := t.TempDir()
	rogue := discoverytest.RogueInHostCache(t, home)
	sn := startTestSupernodeIn(t, home, boot.AddrInfo())
	trusted := discovery.ValidatorOf(sn.DHT()).Trusted
	if slices.Contains(trusted, rogue) {
		t.Fatalf("a peer from the host cache is trusted to witness claims: %v", trusted)
	}
	if !slices.Contains(trusted, boot.ID()) || !slices.Contains(trusted, sn.ID()) {
		t.Fatalf("the supernode does not trust itself and its bootstrap supernode: %v", trusted)
	}
}
