package node

import (
	"context"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/supernode"
)

var loopbackNet = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

func turnConfig() *turnrelay.Config {
	return &turnrelay.Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		AllowCIDRs: loopbackNet}
}

func startCloudRelay(t *testing.T) *turnrelay.Cloud {
	t.Helper()
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	cfg := turnrelay.CloudConfig{TURN: *turnConfig(), Key: key, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quietLogger()}
	cfg.TURN.Secret = "a-cloud-secret-of-enough-length"
	c, err := turnrelay.StartCloud(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRelayTiers: a forced tier carries the call through that relay, with
// audio intact; the mobile profile never goes direct.
func TestRelayTiers(t *testing.T) {
	sn, err := supernode.New(context.Background(), supernode.Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger: quietLogger(), TURN: turnConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	cloud := startCloudRelay(t)
	start := func(handle string, auto func(CallInfo) (CallOptions, error)) *Node {
		n, err := Start(context.Background(), Config{Home: initHome(t, handle), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
			Bootstrap: []peer.AddrInfo{sn.AddrInfo()}, CloudRelays: []peer.AddrInfo{{ID: cloud.ID(), Addrs: cloud.Host().Addrs()}},
			Logger: quietLogger(), Media: loopbackMedia, AutoAnswer: auto})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	var sink *media.CaptureSink
	alice := start("alice", nil)
	start("bob", func(CallInfo) (CallOptions, error) { return CallOptions{Sink: sink}, nil })

	cases := []struct {
		path, profile, tier string
	}{
		{PathDirect, "", TierDirect},
		{PathSupernode, "", TierSupernode},
		{PathCloud, "", TierCloud},
		{PathSupernode, ProfileMobile, TierSupernode},
		{PathCloud, ProfileMobile, TierCloud},
	}
	for _, tc := range cases {
		t.Run(tc.path+"/"+tc.profile, func(t *testing.T) {
			sink = media.NewCaptureSink(0)
			src := &tee{src: media.SpeechLikeSource(3)}
			c, err := alice.Call(context.Background(), "bob", CallOptions{Source: src, Path: tc.path, Profile: tc.profile})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Hangup()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := sink.Wait(ctx, 2*media.SampleRate); err != nil {
				t.Fatalf("no audio through %s: %v (%+v)", tc.tier, err, c.Info())
			}
			st := c.Info().Stats
			if st == nil || st.Tier != tc.tier {
				t.Fatalf("tier %+v, want %s", st, tc.tier)
			}
			if tc.tier != TierDirect && st.Path != "relay" {
				t.Fatalf("forced relay but the path is %s", st.PathDetail)
			}
			if med := medianSegmentCorrelation(src.samples(), sink.Samples()); med < 0.9 {
				t.Fatalf("audio through %s correlates %.3f", tc.tier, med)
			}
		})
	}
	if _, err := alice.Call(context.Background(), "bob", CallOptions{Path: PathDirect, Profile: ProfileMobile}); err == nil {
		t.Fatal("mobile with --path direct was accepted")
	}
}
