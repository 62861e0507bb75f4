// Package discoverytest holds the set-ups that the tests of discovery's
// users (nodes and supernodes) share. It is imported by tests only.
package discoverytest

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/discovery"
)

// RogueInHostCache writes into home's host cache a DHT server that nobody
// configured (a rogue's, at an address where nothing listens) and returns
// its peer ID: the set-up of the tests that check that a peer seen once is
// never trusted to witness handle claims.
func RogueInHostCache(t testing.TB, home string) peer.ID {
	t.Helper()
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
	return rogue
}
