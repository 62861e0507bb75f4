package node

import (
	"context"
	"crypto/rand"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/cloudrelay"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/supernode"
)

var loopbackNet = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// turnConfig is a TURN server on ip, relaying from ip: two relays on two
// loopback addresses can be told apart by their relayed addresses. Every
// node here is on 127.0.0.1, an address of the relay's own host, hence the
// test-only AllowOwnAddrs.
func turnConfig(ip string) *turnrelay.Config {
	return &turnrelay.Config{UDPAddr: ip + ":0", TCPAddr: ip + ":0", RelayIPs: []netip.Addr{netip.MustParseAddr(ip)},
		AllowCIDRs: loopbackNet, AllowOwnAddrs: true}
}

func startCloudRelay(t *testing.T) *cloudrelay.Relay {
	t.Helper()
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	cfg := cloudrelay.Config{TURN: *turnConfig("127.0.0.2"), Key: key, Listen: []string{"/ip4/127.0.0.2/tcp/0"}, Logger: quietLogger()}
	cfg.TURN.Secret = "a-cloud-secret-of-enough-length"
	return nodetest.Start(t, "cloud relay", func() (*cloudrelay.Relay, error) { return cloudrelay.Start(cfg) })
}

// relayNet is a supernode running TURN on 127.0.0.1 and, optionally, a
// cloud relay on 127.0.0.2, for nodes that call through them.
type relayNet struct {
	sn    *supernode.Supernode
	cloud *cloudrelay.Relay // nil: no cloud tier
	// reg, if set, takes the metrics of the next node started.
	reg prometheus.Registerer
}

func newRelayNet(t *testing.T, withCloud bool) *relayNet {
	t.Helper()
	r := &relayNet{sn: startSupernodeWith(t, supernode.Config{Listen: nodetest.Loopback, TURN: turnConfig("127.0.0.1")})}
	if withCloud {
		r.cloud = startCloudRelay(t)
	}
	return r
}

// start starts a node of handle on the net with the media base mc and
// profile, answering calls with auto (nil: it rings).
func (r *relayNet) start(t *testing.T, handle string, mc media.Config, profile string, auto func(CallInfo) (CallOptions, error)) *Node {
	t.Helper()
	cfg := Config{Home: initHome(t, handle), Listen: nodetest.Loopback, Bootstrap: []peer.AddrInfo{r.sn.AddrInfo()},
		Media: mc, Profile: profile, AutoAnswer: auto, Registerer: r.reg}
	r.reg = nil
	if r.cloud != nil {
		cfg.CloudRelays = []peer.AddrInfo{{ID: r.cloud.ID(), Addrs: r.cloud.Host().Addrs()}}
	}
	return startNodeWith(t, cfg)
}

// TestRelayTiers: a forced tier carries the call through that relay, with
// audio intact; the mobile profile never goes direct.
func TestRelayTiers(t *testing.T) {
	net := newRelayNet(t, true)
	// Each case's sink, read by bob's auto-answer: that may run after the
	// case's call ended (a loaded machine), while the next case sets its
	// own, hence atomic.
	var sinkNow atomic.Pointer[media.CaptureSink]
	alice := net.start(t, "alice", loopbackMedia, "", nil)
	bob := net.start(t, "bob", loopbackMedia, "", func(CallInfo) (CallOptions, error) { return CallOptions{Sink: sinkNow.Load()}, nil })

	cases := []struct {
		path, profile, tier string
	}{
		{PathDirect, "", TierDirect},
		{PathSupernode, "", TierSupernode},
		{PathCloud, "", TierCloud},
		{PathSupernode, ProfileMobile, TierSupernode},
		{PathCloud, ProfileMobile, TierCloud},
		// Relay tiers in the policy's order: the first that offers a relay.
		{PathAuto, ProfileMobile, TierSupernode},
		{"supernode,cloud", ProfileMobile, TierSupernode},
		{"cloud,supernode", "", TierCloud},
		{"direct,cloud", "", TierDirect},
	}
	for _, tc := range cases {
		t.Run(tc.path+"/"+tc.profile, func(t *testing.T) {
			sink := media.NewCaptureSink(0)
			sinkNow.Store(sink)
			src := &tee{src: media.SpeechLikeSource(3)}
			c, err := alice.Call(context.Background(), "bob", CallOptions{Source: src, Path: tc.path, Profile: tc.profile})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				// Both ends finished before the next call, or bob is busy.
				c.Hangup()
				if bc, err := bob.FindCall(c.ID()); err == nil {
					select {
					case <-bc.Done():
					case <-time.After(10 * time.Second):
						t.Error("bob's side of the call did not end")
					}
				}
			}()
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

// TestRelayFailover: a relayed call whose relay dies restarts ICE and goes
// on through the other tier within 5 s. With auto the call starts on the
// supernode relay (the preferred relay tier); with cloud,supernode on the
// cloud relay.
func TestRelayFailover(t *testing.T) {
	for _, tc := range []struct{ path, before, after string }{
		{PathAuto, TierSupernode, TierCloud},
		{"cloud,supernode", TierCloud, TierSupernode},
	} {
		t.Run(tc.path, func(t *testing.T) { relayFailover(t, tc.path, tc.before, tc.after) })
	}
}

func relayFailover(t *testing.T, path, before, want string) {
	net := newRelayNet(t, true)
	sn, cloud := net.sn, net.cloud
	sink := media.NewCaptureSink(0)
	reg := prometheus.NewRegistry()
	net.reg = reg // alice's
	mc := loopbackMedia
	// A desktop call's path checks: the mobile defaults (10 s) are too slow
	// for this test.
	mc.DisconnectedTimeout, mc.KeepaliveInterval = 1500*time.Millisecond, 500*time.Millisecond
	alice := net.start(t, "alice", mc, ProfileMobile, nil)
	net.start(t, "bob", mc, ProfileMobile, func(CallInfo) (CallOptions, error) { return CallOptions{Sink: sink}, nil })
	c, err := alice.Call(context.Background(), "bob", CallOptions{Source: media.SpeechLikeSource(4), Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Hangup()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.Wait(ctx, media.SampleRate); err != nil {
		t.Fatal(err)
	}
	if got := c.Info().Stats.Tier; got != before {
		t.Fatalf("mobile call --path %s on tier %q, want %s", path, got, before)
	}
	if before == TierCloud {
		cloud.Close()
	} else {
		sn.TURN().Close()
	}
	killed := time.Now()
	// The call moves to the other tier within 5 s...
	for {
		if st := c.Info().Stats; st != nil && st.Tier == want {
			break
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("%s relay killed: after %s the call is on %+v", before, time.Since(killed), c.Info().Stats)
		}
		time.Sleep(20 * time.Millisecond)
	}
	moved := time.Since(killed)
	// ...and a second of audio follows through it.
	heard := sink.Len()
	wctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := sink.Wait(wctx, heard+media.SampleRate); err != nil {
		t.Fatalf("no audio after moving to %s: %v", want, err)
	}
	t.Logf("%s relay killed: on %s after %s, %d ICE restart(s)", before, want, moved.Round(time.Millisecond), c.Info().Stats.ICERestarts)
	// The move is counted (the count is sampled every second).
	for deadline := time.Now().Add(3 * time.Second); counterValue(t, reg, "parley_call_path_changes_total", "from", before, "to", want) < 1; {
		if time.Now().After(deadline) {
			t.Fatalf("no parley_call_path_changes_total{from=%q,to=%q}", before, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// counterValue is the value of the counter name with the label pairs kv
// in reg, 0 when it has none.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, kv ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if labels[kv[i]] != kv[i+1] {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in     string
		direct bool
		relays string
		bad    bool
	}{
		{in: "", direct: true, relays: "supernode,cloud"},
		{in: "auto", direct: true, relays: "supernode,cloud"},
		{in: "direct", direct: true},
		{in: "cloud", relays: "cloud"},
		{in: "cloud,supernode", relays: "cloud,supernode"},
		{in: "direct, cloud", direct: true, relays: "cloud"},
		{in: "cloud,cloud", bad: true},
		{in: "auto,cloud", bad: true},
		{in: "turn", bad: true},
		{in: "supernode,", bad: true},
	} {
		p, err := parsePath(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parsePath(%q) = %+v, want an error", tc.in, p)
			}
			continue
		}
		if err != nil || p.direct != tc.direct || strings.Join(p.relays, ",") != tc.relays {
			t.Errorf("parsePath(%q) = %+v, %v; want direct %v, relays %q", tc.in, p, err, tc.direct, tc.relays)
		}
	}
	if err := checkPolicy("direct", ProfileMobile); err == nil {
		t.Error("the mobile profile accepted a policy without relays")
	}
}

// TestNoMediaPathEnds: a call forced onto the supernode tier whose relay
// dies has nowhere to go; after a bounded number of ICE restarts it ends,
// on both sides, saying so, rather than staying up in silence.
func TestNoMediaPathEnds(t *testing.T) {
	net := newRelayNet(t, false)
	sn := net.sn
	mc := loopbackMedia
	mc.DisconnectedTimeout, mc.KeepaliveInterval = 1500*time.Millisecond, 500*time.Millisecond
	sink := media.NewCaptureSink(0)
	alice := net.start(t, "alice", mc, "", nil)
	bob := net.start(t, "bob", mc, "", func(CallInfo) (CallOptions, error) { return CallOptions{Sink: sink}, nil })
	c, err := alice.Call(context.Background(), "bob", CallOptions{Source: media.SpeechLikeSource(6), Path: PathSupernode, Profile: ProfileMobile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Hangup()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.Wait(ctx, media.SampleRate/2); err != nil {
		t.Fatal(err)
	}
	sn.TURN().Close()
	select {
	case <-c.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("a call with no path left is still up after a minute: %+v", c.Info())
	}
	if r := c.Info().Reason; r != "no media path" {
		t.Fatalf("caller's call ended with %q, want no media path", r)
	}
	bc, err := bob.FindCall(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-bc.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("callee's side still up: %+v", bc.Info())
	}
	if r := bc.Info().Reason; !strings.Contains(r, "no media path") {
		t.Errorf("callee's call ended with %q, want it to say no media path", r)
	}
}
