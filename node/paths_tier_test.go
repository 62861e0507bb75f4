package node

import (
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/media"
)

// TestTierOf: a path's tier is named by the relay that carries it, never
// by a host address that happens to share a relay's IP (a browser on the
// machine of its supernode, calling a device relayed by its cloud relay).
func TestTierOf(t *testing.T) {
	s := &iceSet{tiers: map[string]string{}}
	s.add(webrtc.ICEServer{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}}, TierSupernode)
	s.add(webrtc.ICEServer{URLs: []string{"turn:127.0.0.2:3478?transport=udp"}}, TierCloud)
	for _, c := range []struct {
		name string
		p    media.Path
		want string
	}{
		{"direct", media.Path{LocalType: "host", RemoteType: "host", Local: "127.0.0.1:5000", Remote: "127.0.0.1:6000"}, TierDirect},
		{"our relay, by its URL", media.Path{LocalType: "relay", RemoteType: "host", Local: "127.0.0.1:50000", RelayServer: "turn:127.0.0.1:3478?transport=udp"}, TierSupernode},
		{"the peer's relay, by its address", media.Path{LocalType: "host", RemoteType: "relay", Local: "127.0.0.1:5000", Remote: "127.0.0.2:64458"}, TierCloud},
		{"a relay nobody named", media.Path{LocalType: "host", RemoteType: "relay", Local: "127.0.0.1:5000", Remote: "198.51.100.7:3478"}, "relay"},
	} {
		if got := s.tierOf(c.p); got != c.want {
			t.Errorf("%s: tier %q, want %q", c.name, got, c.want)
		}
	}
}
