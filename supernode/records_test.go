package supernode

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p"
	record "github.com/libp2p/go-libp2p-record"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/nodetest"
)

// quiet discards a test supernode's logs, or with PARLEY_TEST_DEBUG=1
// writes them all to stderr.
var quiet = nodetest.Logger

// handleRecord signs a record for handle with a fresh account and device.
func handleRecord(t testing.TB, handle string, now time.Time, ttl time.Duration) []byte {
	t.Helper()
	_, acct, _ := ed25519.GenerateKey(rand.Reader)
	_, pub, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPublicKey(pub)
	r := &discovery.HandleRecord{V: 1, Handle: handle, Seq: 1, Claimed: now.UnixMilli(), Expires: now.Add(ttl).Unix(),
		Devices: []discovery.Device{{PeerID: id.String(), BoxKey: make([]byte, 32), Name: "laptop"}}}
	if err := r.Sign(acct); err != nil {
		t.Fatal(err)
	}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dhtClient is a fresh device-like DHT client joined through boot.
func dhtClient(t *testing.T, boot peer.AddrInfo) (func(string) (*discovery.HandleRecord, error), func([]byte) error) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := discovery.NewDHT(context.Background(), h, discovery.DHTConfig{Bootstrap: []peer.AddrInfo{boot}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); h.Close() })
	if _, err := discovery.Bootstrap(ctx, h, []peer.AddrInfo{boot}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := discovery.WaitRoutable(ctx, d); err != nil {
		t.Fatal(err)
	}
	resolve := func(handle string) (*discovery.HandleRecord, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, _, err := discovery.Resolve(ctx, d, handle)
		return r, err
	}
	publish := func(rec []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return discovery.Publish(ctx, d, rec)
	}
	return resolve, publish
}

// TestRecordsSurviveRestart: a handle published to the only supernode is
// served at once by the supernode restarted on the same home, whether it
// was closed cleanly or SIGKILLed (a child process running the supernode).
func TestRecordsSurviveRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool
	}{
		{"clean close", false},
		{"SIGKILL", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", nodetest.FixedPort(t, "127.0.0.1"))
			start, stop := inProcess(t, home, listen)
			if tc.crash {
				start, stop = childProcess(t, home, listen)
			}
			boot := start()
			_, publish := dhtClient(t, boot)
			rec := handleRecord(t, "alice", time.Now(), time.Hour)
			if err := publish(rec); err != nil {
				t.Fatal(err)
			}
			stop()

			boot = start()
			began := time.Now()
			resolve, _ := dhtClient(t, boot)
			got, err := resolve("alice")
			if err != nil {
				t.Fatalf("resolve after restart: %v", err)
			}
			if got.Handle != "alice" {
				t.Fatalf("resolved %+v", got)
			}
			t.Logf("resolved %s after the restart", time.Since(began).Round(time.Millisecond))
			stop()
		})
	}
}

func inProcess(t *testing.T, home, listen string) (start func() peer.AddrInfo, stop func()) {
	var sn *Supernode
	start = func() peer.AddrInfo {
		var err error
		sn, err = newTestSupernode(Config{Home: home, Listen: []string{listen}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sn.Close() })
		return sn.AddrInfo()
	}
	return start, func() { sn.Close() }
}

// childProcess runs the supernode in this test binary as a child
// (TestHelperSupernode), so stop can SIGKILL it.
func childProcess(t *testing.T, home, listen string) (start func() peer.AddrInfo, stop func()) {
	var cmd *exec.Cmd
	start = func() peer.AddrInfo {
		cmd = exec.Command(os.Args[0], "-test.run=^TestHelperSupernode$")
		cmd.Env = append(os.Environ(), "PARLEY_HELPER_HOME="+home, "PARLEY_HELPER_LISTEN="+listen)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
					line <- a
				}
			}
			close(line)
		}()
		select {
		case a, ok := <-line:
			if !ok {
				t.Fatal("child supernode exited before it listened")
			}
			infos, err := discovery.ParseAddrs([]string{a})
			if err != nil {
				t.Fatal(err)
			}
			return infos[0]
		case <-time.After(30 * time.Second):
			t.Fatal("child supernode did not start within 30s")
		}
		return peer.AddrInfo{}
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	return start, stop
}

// TestHelperSupernode is the child of childProcess; it does nothing in a
// normal test run.
func TestHelperSupernode(t *testing.T) {
	home := os.Getenv("PARLEY_HELPER_HOME")
	if home == "" {
		t.Skip("only runs as a child of TestRecordsSurviveRestart")
	}
	sn, err := newTestSupernode(Config{Home: home, Listen: []string{os.Getenv("PARLEY_HELPER_LISTEN")}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("ADDR %s\n", sn.Addrs()[0])
	select {} // until SIGKILLed
}

// TestRecordStoreUnusable: a supernode whose record store cannot be
// written refuses to start and says why, rather than keep records in
// memory and lose them.
func TestRecordStoreUnusable(t *testing.T) {
	home := t.TempDir()
	// Something that is not a directory where the store goes: as final as
	// a read-only disk, and testable as root.
	if err := os.WriteFile(filepath.Join(home, RecordDir), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newTestSupernode(Config{Home: home})
	if !errors.Is(err, ErrRecordStore) || !strings.Contains(err.Error(), filepath.Join(home, RecordDir)) {
		t.Fatalf("start with an unusable record store: %v, want ErrRecordStore naming the path", err)
	}
}

// TestRecordSweep: expired and over-age records leave the disk, fresh ones
// stay.
func TestRecordSweep(t *testing.T) {
	now := time.Now()
	rs, err := openRecordStore(t.TempDir(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	v := record.NamespacedValidator{discovery.HandleNamespace: discovery.HandleValidator{Now: func() time.Time { return now }}}
	ctx := context.Background()
	put := func(handle string, value []byte, received time.Time) {
		key := discovery.HandleKey(handle)
		b, err := proto.Marshal(&recpb.Record{Key: []byte(key), Value: value, TimeReceived: received.UTC().Format(time.RFC3339Nano)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Put(ctx, ds.NewKey(handle), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, handle string
		value        []byte
		received     time.Time
		keep         bool
	}{
		{"fresh", "fresh", handleRecord(t, "fresh", now, time.Hour), now, true},
		{"received too long ago", "old", handleRecord(t, "old", now, time.Hour), now.Add(-discovery.RecordMaxAge - time.Minute), false},
		{"handle record expired", "expired", handleRecord(t, "expired", now.Add(-2*time.Hour), time.Hour), now, false},
		{"not a record", "junk", []byte("junk"), now, false},
	} {
		put(c.handle, c.value, c.received)
		defer func() {
			has, _ := rs.Has(ctx, ds.NewKey(c.handle))
			if has != c.keep {
				t.Errorf("%s: on disk after sweep %v, want %v", c.name, has, c.keep)
			}
		}()
	}
	kept, dropped, err := rs.sweep(ctx, v, discovery.RecordMaxAge, now)
	if err != nil || kept != 1 || dropped != 3 {
		t.Fatalf("sweep kept %d dropped %d (%v), want 1 and 3", kept, dropped, err)
	}
}

// TestSupernodeStartsAloneAndJoinsLater: a supernode whose only bootstrap
// peer is down starts anyway, and joins it by itself when it comes up; a
// restart with that peer gone from --bootstrap joins through the host cache.
func TestSupernodeStartsAloneAndJoinsLater(t *testing.T) {
	homeA := t.TempDir()
	listenA := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", nodetest.FixedPort(t, "127.0.0.1"))
	startA, stopA := inProcess(t, homeA, listenA)
	infoA := startA()
	stopA()

	homeB := t.TempDir()
	b, err := newTestSupernode(Config{Home: homeB, Bootstrap: []peer.AddrInfo{infoA}})
	if err != nil {
		t.Fatalf("start with an unreachable bootstrap peer: %v", err)
	}
	defer b.Close()
	startA()
	t.Logf("B joined A %s after A started", nodetest.Eventually(t, 10*time.Second, "B joins A", func() bool { return b.connectedSupernodes() > 0 }))
	b.Close()

	b, err = newTestSupernode(Config{Home: homeB})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Logf("B rejoined A from its host cache in %s", nodetest.Eventually(t, 10*time.Second, "B joins A from its host cache", func() bool { return b.connectedSupernodes() > 0 }))
}
