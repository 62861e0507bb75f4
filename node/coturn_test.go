package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/internal/turnrest"
	"github.com/parley-net/parley/media"
)

const coturnSecret = "coturn-stands-in-for-the-cloud-relay"

// startCoturn runs Debian's coturn on ip with use-auth-secret, the TURN
// REST scheme parley's cloud relay shares, and returns its turn: URL and a
// function that SIGKILLs it.
func startCoturn(t *testing.T, ip string) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		t.Skip("coturn is not installed (Debian: coturn); skipping the coturn-as-cloud-relay test")
	}
	port := nodetest.FixedPort(t, ip)
	t.Logf("coturn port %d", port)
	dir := t.TempDir()
	conf := fmt.Sprintf(`listening-ip=%[1]s
relay-ip=%[1]s
listening-port=%[2]d
min-port=44000
max-port=44999
realm=parley
use-auth-secret
static-auth-secret=%[3]s
allow-loopback-peers
allowed-peer-ip=127.0.0.0-127.255.255.255
no-multicast-peers
no-tls
no-dtls
no-tcp-relay
no-cli
no-rfc5780
fingerprint
userdb=%[4]s/turndb
pidfile=%[4]s/turnserver.pid
log-file=stdout
simple-log
`, ip, port, coturnSecret, dir)
	path := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "Total General servers") {
				once = true
				close(ready)
			}
		}
	}()
	var once sync.Once
	kill := func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(kill)
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		t.Fatal("coturn did not start")
	}
	return fmt.Sprintf("turn:%s:%d?transport=udp", ip, port), kill
}

// TestCoturnAsCloudRelay: with coturn in place of parley relay, a call
// forced onto the cloud tier is relayed by coturn with intact audio, and a
// relay-only call preferring the cloud (cloud,supernode) moves to the
// supernode's relay within 5 s of coturn's death.
func TestCoturnAsCloudRelay(t *testing.T) {
	url, killCoturn := startCoturn(t, "127.0.0.3")
	cred, err := turnrest.Issue(coturnSecret, "parley-test", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	net := newRelayNet(t, false) // coturn, configured by hand, is the cloud tier
	mc := loopbackMedia
	mc.ICEServers = []webrtc.ICEServer{{URLs: []string{url}, Username: cred.Username, Credential: cred.Password}}
	mc.DisconnectedTimeout, mc.KeepaliveInterval = 1500*time.Millisecond, 500*time.Millisecond // a desktop call's, for the mobile call
	var sinkNow atomic.Pointer[media.CaptureSink]                                              // as in TestRelayTiers
	alice := net.start(t, "alice", mc, "", nil)
	bob := net.start(t, "bob", mc, "", func(CallInfo) (CallOptions, error) { return CallOptions{Sink: sinkNow.Load()}, nil })

	call := func(opts CallOptions) (*Call, *tee) {
		sink := media.NewCaptureSink(0)
		sinkNow.Store(sink)
		src := &tee{src: media.SpeechLikeSource(5)}
		opts.Source = src
		c, err := alice.Call(context.Background(), "bob", opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := sink.Wait(ctx, media.SampleRate); err != nil {
			t.Fatalf("no audio: %v (%+v)", err, c.Info())
		}
		return c, src
	}

	c, src := call(CallOptions{Path: PathCloud})
	sink := sinkNow.Load()
	if st := c.Info().Stats; st.Tier != TierCloud || !strings.Contains(st.PathDetail, "127.0.0.3") {
		t.Fatalf("cloud call not relayed by coturn: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sink.Wait(ctx, 2*media.SampleRate)
	if med := medianSegmentCorrelation(src.samples(), sink.Samples()); med < 0.9 {
		t.Fatalf("audio through coturn correlates %.3f", med)
	}
	c.Hangup()
	if bc, err := bob.FindCall(c.ID()); err == nil {
		<-bc.Done()
	}

	// A relay-only call preferring the cloud tier: coturn carries it; kill
	// coturn and the call moves to the supernode's relay.
	c, _ = call(CallOptions{Profile: ProfileMobile, Path: "cloud,supernode"})
	defer c.Hangup()
	before, want := c.Info().Stats.Tier, TierSupernode
	if before != TierCloud {
		t.Fatalf("mobile call --path cloud,supernode on %+v, want coturn", c.Info().Stats)
	}
	t.Logf("supernode TURN before the kill: %+v", net.sn.TURN().Stats())
	killCoturn()
	killed := time.Now()
	for c.Info().Stats == nil || c.Info().Stats.Tier != want {
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("%s relay killed: after 5 s the call is on %+v (supernode TURN: %+v)", before, c.Info().Stats, net.sn.TURN().Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s relay killed: on %s after %s", before, want, time.Since(killed).Round(time.Millisecond))
}
