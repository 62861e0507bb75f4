package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/supernode"
)

func TestJitterAndBackoff(t *testing.T) {
	for _, c := range []struct {
		name string
		d    time.Duration
		r    float64
		want time.Duration
	}{
		{"low end", 10 * time.Minute, 0, 8 * time.Minute},
		{"middle", 10 * time.Minute, 0.5, 10 * time.Minute},
		{"high end", 10 * time.Minute, 1, 12 * time.Minute},
		{"one second", time.Second, 0.25, 900 * time.Millisecond},
	} {
		if got := jitter(c.d, 0.2, c.r); got != c.want {
			t.Errorf("%s: jitter(%s, 0.2, %v) = %s, want %s", c.name, c.d, c.r, got, c.want)
		}
	}
	var seq []time.Duration
	for d := time.Duration(0); len(seq) < 9; {
		d = nextBackoff(d)
		seq = append(seq, d)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if seq[i] != want[i]*time.Second {
			t.Fatalf("backoff sequence %v, want %v seconds", seq, want)
		}
	}
}

// fixedSupernode is a supernode with its own home and a fixed address, so it
// can stop and come back where devices look for it.
type fixedSupernode struct {
	t      *testing.T
	home   string
	listen string
	sn     *supernode.Supernode
	info   peer.AddrInfo
}

func newFixedSupernode(t *testing.T) *fixedSupernode {
	port := nodetest.FixedPort(t, "127.0.0.1")
	f := &fixedSupernode{t: t, home: t.TempDir(), listen: fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
	t.Cleanup(f.stop)
	return f
}

func (f *fixedSupernode) start() {
	f.t.Helper()
	f.startWith(nil)
}

// startWith starts the supernode bootstrapping from boot.
func (f *fixedSupernode) startWith(boot []peer.AddrInfo) {
	f.t.Helper()
	sn, err := newSupernode(supernode.Config{Home: f.home, Listen: []string{f.listen}, Bootstrap: boot})
	if err != nil {
		f.t.Fatal(err)
	}
	f.sn, f.info = sn, sn.AddrInfo()
}

func (f *fixedSupernode) stop() {
	if f.sn != nil {
		f.sn.Close()
		f.sn = nil
	}
}

// wipe empties the supernode's disk but its key: its DHT records and
// mailbox are gone, its address is the same.
func (f *fixedSupernode) wipe() {
	f.t.Helper()
	ents, err := os.ReadDir(f.home)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "supernode.key" {
			os.RemoveAll(filepath.Join(f.home, e.Name()))
		}
	}
}

func startWith(t *testing.T, home string, boot []peer.AddrInfo) *Node {
	t.Helper()
	return startNodeWith(t, Config{Home: home, Bootstrap: boot,
		RetryInterval: 100 * time.Millisecond, BootstrapTimeout: 5 * time.Second, FetchInterval: time.Second})
}

// TestStartsOfflineComesOnline: with its only supernode down a daemon
// starts at once, says it is offline and why, queues chat to a handle it
// knows, refuses what needs the network with ErrOffline, and comes online
// by itself when the supernode returns; the queued message arrives once.
func TestStartsOfflineComesOnline(t *testing.T) {
	f := newFixedSupernode(t)
	f.start()
	aliceHome, bobHome := initHome(t, "alice"), initHome(t, "bob")
	alice := startWith(t, aliceHome, []peer.AddrInfo{f.info})
	bob := startWith(t, bobHome, []peer.AddrInfo{f.info})
	ctx := context.Background()
	if _, err := alice.Send(ctx, "bob", "before"); err != nil {
		t.Fatal(err)
	}
	alice.Close()
	bob.Close()
	f.stop()

	began := time.Now()
	alice = startWith(t, aliceHome, []peer.AddrInfo{f.info})
	t.Logf("started offline in %s", time.Since(began).Round(time.Millisecond))
	if el := time.Since(began); el > 5*time.Second {
		t.Fatalf("start with a refused supernode took %s", el)
	}
	st := alice.Status()
	if st.Online || st.State != "offline" || !strings.Contains(st.OfflineReason, f.listen+"/p2p/"+f.info.ID.String()) ||
		strings.Contains(st.OfflineReason, "<peer.ID") {
		t.Fatalf("status while offline: %+v", st)
	}
	res, err := alice.Send(ctx, "bob", "while offline")
	if err != nil || len(res.Queued) != 1 {
		t.Fatalf("send while offline to a known handle: %+v, %v", res, err)
	}
	if _, err := alice.Send(ctx, "carol", "who?"); !errors.Is(err, ErrOffline) {
		t.Fatalf("send to an unknown handle while offline: %v, want ErrOffline", err)
	}
	callStart := time.Now()
	if _, err := alice.Call(ctx, "bob", CallOptions{}); !errors.Is(err, ErrOffline) || time.Since(callStart) > time.Second {
		t.Fatalf("call while offline: %v after %s, want ErrOffline at once", err, time.Since(callStart))
	}

	f.start()
	up := time.Now()
	bob = startWith(t, bobHome, []peer.AddrInfo{f.info})
	ev, stop := bob.Subscribe()
	defer stop()
	took := nodetest.Eventually(t, 15*time.Second, "alice online", func() bool { return alice.Status().Online })
	t.Logf("alice online %s after the supernode returned", took.Round(time.Millisecond))
	got := waitMessages(t, ev, 1, 15*time.Second)
	if got[0].Body != "while offline" {
		t.Fatalf("bob got %q", got[0].Body)
	}
	t.Logf("delivered %s after the supernode returned", time.Since(up).Round(time.Millisecond))
	h, _ := bob.History(ctx, "alice", 0)
	n := 0
	for _, m := range h {
		if m.Body == "while offline" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("bob has the message %d times", n)
	}
}

// TestRepublishAfterEmptyDisk: the only supernode comes back with an empty
// disk; both devices republish and resolve each other within 10 s.
func TestRepublishAfterEmptyDisk(t *testing.T) {
	f := newFixedSupernode(t)
	f.start()
	alice := startWith(t, initHome(t, "alice"), []peer.AddrInfo{f.info})
	startWith(t, initHome(t, "bob"), []peer.AddrInfo{f.info})
	ctx := context.Background()
	if _, err := alice.Resolve(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	f.stop()
	f.wipe()
	nodetest.Eventually(t, 10*time.Second, "alice sees the supernode gone", func() bool { return !alice.Status().Online })
	f.start()
	took := nodetest.Eventually(t, 10*time.Second, "whois bob after the supernode's return", func() bool {
		_, err := alice.Resolve(ctx, "bob")
		return err == nil
	})
	t.Logf("whois bob answers %s after the supernode came back with an empty disk", took.Round(time.Millisecond))
}

// TestHostCacheJoinsWithoutBootstrap: a device restarted with only dead
// --bootstrap addresses joins through the supernodes its host cache
// remembers.
func TestHostCacheJoinsWithoutBootstrap(t *testing.T) {
	net := startSupernodes(t, 2)
	home := initHome(t, "alice")
	a := startWith(t, home, net.infos()[:1])
	nodetest.Eventually(t, 10*time.Second, "both supernodes met", func() bool { return a.supernodesConnected() == 2 })
	a.Close()
	hc, err := discovery.LoadHostCache(home, 0)
	if err != nil || len(hc.Entries()) != 2 {
		t.Fatalf("host cache after close: %+v, %v", hc.Entries(), err)
	}
	if fi, err := os.Stat(filepath.Join(home, discovery.HostCacheFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host cache file: %v %v", fi, err)
	}
	dead := newFixedSupernode(t) // its key exists, nothing listens
	dead.start()
	deadInfo := dead.info
	dead.stop()
	net.sns[0].Close()
	net.sns[0] = nil
	a = startWith(t, home, []peer.AddrInfo{deadInfo})
	if st := a.Status(); !st.Online {
		t.Fatalf("restart with a dead --bootstrap and a host cache: %+v", st)
	}
	if _, err := a.Resolve(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
}

// resolveVia resolves handle from a fresh DHT client that knows only sn.
func resolveVia(t *testing.T, sn peer.AddrInfo, handle string) error {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	d, err := discovery.NewDHT(context.Background(), h, discovery.DHTConfig{Bootstrap: []peer.AddrInfo{sn}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := h.Connect(ctx, sn); err != nil {
		return err
	}
	if err := discovery.WaitRoutable(ctx, d); err != nil {
		return err
	}
	_, _, err = discovery.Resolve(ctx, d, handle)
	return err
}

// TestRepublishToReturningSupernode: one of two supernodes comes back with
// an empty disk while the device stays online through the other; the
// device redials it and republishes, so it alone serves the record again.
func TestRepublishToReturningSupernode(t *testing.T) {
	a, b := newFixedSupernode(t), newFixedSupernode(t)
	a.start()
	b.start()
	alice := startWith(t, initHome(t, "alice"), []peer.AddrInfo{a.info, b.info})
	nodetest.Eventually(t, 10*time.Second, "alice meets both supernodes", func() bool { return alice.supernodesConnected() == 2 })
	a.stop()
	a.wipe()
	a.start()
	back := time.Now()
	if !alice.Status().Online {
		t.Fatal("alice went offline with a supernode left")
	}
	nodetest.Eventually(t, 10*time.Second, "alice redials the returning supernode", func() bool { return alice.supernodesConnected() == 2 })
	b.stop()
	nodetest.Eventually(t, 10*time.Second-time.Since(back), "alice's record on the returning supernode", func() bool {
		return resolveVia(t, a.info, "alice") == nil
	})
	t.Logf("the returning supernode serves alice's record %s after it came back", time.Since(back).Round(time.Millisecond))
}

// TestRepublishToNewClosestSupernode: a supernode that joins after the
// device published becomes one of the closest to its record; once a lookup
// shows it to the device, the device republishes and it holds the record.
func TestRepublishToNewClosestSupernode(t *testing.T) {
	a, b := newFixedSupernode(t), newFixedSupernode(t)
	a.start()
	alice := startWith(t, initHome(t, "alice"), []peer.AddrInfo{a.info})
	b.startWith([]peer.AddrInfo{a.info})
	joined := time.Now()
	// Any lookup shows the newcomer to the device.
	nodetest.Eventually(t, 10*time.Second, "alice's routing table learns the new supernode", func() bool {
		alice.Resolve(context.Background(), "nobody")
		return alice.dht.RoutingTable().Find(b.info.ID) != ""
	})
	nodetest.Eventually(t, 10*time.Second, "the new supernode holds alice's record", func() bool {
		c, err := b.sn.RecordCount()
		return err == nil && c == 1
	})
	t.Logf("new supernode holds alice's record %s after it joined", time.Since(joined).Round(time.Millisecond))
}
