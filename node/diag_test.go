package node

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node/netcheck"
	"github.com/parley-net/parley/supernode"
)

func TestConnTier(t *testing.T) {
	const relay = "12D3KooWGRUVh6Ez3cv6WKsSVcgzu3PhdZwFavqGWyTBmNyvTx6r"
	const dst = "12D3KooWLRPJAA5o6Z6Y1uLHTKBLWXXdD3rpqFN5iREM1tjFfvY4"
	for _, tc := range []struct {
		addr, tier, via, transport string
	}{
		{"/ip4/198.51.100.7/tcp/4100", TierDirect, "", "tcp"},
		{"/ip4/198.51.100.7/udp/4100/quic-v1", TierDirect, "", "quic-v1"},
		{"/ip4/203.0.113.10/tcp/443/p2p/" + relay + "/p2p-circuit", "relay", relay, "tcp"},
		{"/ip4/203.0.113.10/udp/4100/quic-v1/p2p/" + relay + "/p2p-circuit/p2p/" + dst, "relay", relay, "quic-v1"},
	} {
		tier, via, transport, _ := connTier(ma.StringCast(tc.addr))
		if tier != tc.tier || via != tc.via || transport != tc.transport {
			t.Errorf("%s: %s via %q over %s, want %s via %q over %s", tc.addr, tier, via, transport, tc.tier, tc.via, tc.transport)
		}
	}
}

// TestNetcheckAndPing: through a real supernode (STUN and TURN on
// 127.0.0.1) and a real cloud relay (TURN on 127.0.0.2), a node's netcheck
// finds UDP, one mapped address for every destination, and TURN over UDP
// and TCP at both tiers; and it pings another node's device directly.
func TestNetcheckAndPing(t *testing.T) {
	sn := startSupernodeWith(t, supernode.Config{Listen: nodetest.Loopback, STUNAddr: "127.0.0.1:0", TURN: turnConfig("127.0.0.1")})
	r := &relayNet{sn: sn, cloud: startCloudRelay(t)}
	alice := r.start(t, "alice", media.Config{}, "", nil)
	bob := r.start(t, "bob", media.Config{}, "", nil)

	rep, err := alice.Netcheck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if !rep.UDP || rep.Mapping != netcheck.MappingIndependent {
		t.Errorf("udp %v mapping %q, want UDP and %s", rep.UDP, rep.Mapping, netcheck.MappingIndependent)
	}
	if len(rep.STUN) < 3 {
		t.Errorf("%d STUN destinations (%+v), want the supernode's STUN and both TURN servers' UDP ports", len(rep.STUN), rep.STUN)
	}
	for _, tier := range []string{TierSupernode, TierCloud} {
		for _, tr := range []string{"udp", "tcp"} {
			if !rep.TURNReachable(tier, tr) {
				t.Errorf("TURN over %s at the %s tier not reachable: %+v", tr, tier, rep.TURN)
			}
		}
	}
	if len(rep.Ping) != 2 || rep.Ping[0].Error != "" || rep.Ping[1].Error != "" {
		t.Errorf("libp2p round trips %+v, want one to each server", rep.Ping)
	}

	res, err := alice.Ping(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Device != bob.ID().String() || res[0].Tier != TierDirect || res[0].Transport != "tcp" || res[0].RTTMS <= 0 {
		t.Errorf("ping %+v, want bob's device, direct over tcp, with a round trip", res)
	}
	if _, err := peer.Decode(res[0].Device); err != nil {
		t.Error(err)
	}
}
