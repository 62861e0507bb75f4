package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/supernode"
	"github.com/parley-net/parley/supernode/mailboxserver"
)

// tap collects what a supernode reads from its mailbox streams.
type tap struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (t *tap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.Write(p)
}

func (t *tap) contains(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Contains(t.b.Bytes(), []byte(s))
}

type snet struct {
	t     *testing.T
	homes []string
	sns   []*supernode.Supernode
	taps  []*tap
}

// startSupernodes starts n supernodes that know each other.
func startSupernodes(t *testing.T, n int) *snet {
	s := &snet{t: t}
	for i := 0; i < n; i++ {
		s.homes = append(s.homes, t.TempDir())
		s.taps = append(s.taps, &tap{})
		s.sns = append(s.sns, nil)
		s.start(i)
	}
	t.Cleanup(func() {
		for _, sn := range s.sns {
			if sn != nil {
				sn.Close()
			}
		}
	})
	return s
}

func (s *snet) start(i int) {
	var boot []peer.AddrInfo
	for j, sn := range s.sns {
		if sn != nil && j != i {
			boot = append(boot, sn.AddrInfo())
		}
	}
	sn, err := newSupernode(supernode.Config{Home: s.homes[i], Listen: nodetest.Loopback, Bootstrap: boot,
		Mailbox: mailboxserver.Config{ReplicateInterval: 300 * time.Millisecond, Tap: s.taps[i]}})
	if err != nil {
		s.t.Fatal(err)
	}
	s.sns[i] = sn
}

func (s *snet) infos() []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, sn := range s.sns {
		if sn != nil {
			out = append(out, sn.AddrInfo())
		}
	}
	return out
}

func startOn(t *testing.T, home string, s *snet) *Node {
	t.Helper()
	return startOnWith(t, home, s.infos())
}

// startOnWith starts a node of home on the supernodes boot, with the
// short retry, fetch and delivery intervals of the mailbox tests.
func startOnWith(t *testing.T, home string, boot []peer.AddrInfo) *Node {
	t.Helper()
	return startNodeWith(t, Config{Home: home, Listen: nodetest.Loopback, Bootstrap: boot,
		RetryInterval: 100 * time.Millisecond, FetchInterval: 500 * time.Millisecond, DeliveryTimeout: 3 * time.Second})
}

func TestOfflineDeviceGetsEverythingThroughMailboxes(t *testing.T) {
	net := startSupernodes(t, 4)
	aliceHome, bobHome := initHome(t, "alice"), initHome(t, "bob")
	phoneHome := linkDevice(t, bobHome, "bob-phone")
	// The phone is online once, so its record is published, then goes away.
	phone := startOn(t, phoneHome, net)
	phoneID := phone.ID()
	phone.Close()
	alice := startOn(t, aliceHome, net)
	laptop := startOn(t, bobHome, net)
	ctx := context.Background()

	const n = 20
	secret := "the eagle lands at dawn"
	var sent []string
	for i := 0; i < n; i++ {
		res, err := alice.Send(ctx, "bob", fmt.Sprintf("%s #%02d", secret, i))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, res.Message.ID)
		if len(res.Delivered) != 1 || len(res.Mailbox) != 1 || res.Mailbox[0] != phoneID.String() {
			t.Fatalf("message %d: delivered %v, mailbox %v, queued %+v", i, res.Delivered, res.Mailbox, res.Queued)
		}
	}

	// Which supernodes hold bob's mail? Kill two of them, restart one.
	var holders []int
	for i, sn := range net.sns {
		if c, _ := sn.Mailbox().Count(); c > 0 {
			holders = append(holders, i)
		}
	}
	if len(holders) != 3 {
		t.Fatalf("%d supernodes hold bob's mail, want 3", len(holders))
	}
	for _, i := range holders[:2] {
		// Supernodes never see plaintext: not in their database, not in
		// what they read from their streams.
		db, err := os.ReadFile(filepath.Join(net.homes[i], "mailbox.db"))
		wal, _ := os.ReadFile(filepath.Join(net.homes[i], "mailbox.db-wal"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(append(db, wal...), []byte("eagle")) || net.taps[i].contains("eagle") {
			t.Fatalf("supernode %d saw the plaintext", i)
		}
		if !net.taps[i].contains(phoneID.String()) {
			t.Fatalf("supernode %d's tap saw nothing: the check above proves nothing", i)
		}
		net.sns[i].Close()
		net.sns[i] = nil
	}
	net.start(holders[0])

	start := time.Now()
	phone = startOn(t, phoneHome, net)
	ev, stop := phone.Subscribe()
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	var h []Message
	for {
		var err error
		if h, err = phone.store.History(ctx, DMConv("alice", "bob"), 0); err != nil {
			t.Fatal(err)
		}
		if len(h) >= n || time.Now().After(deadline) {
			break
		}
		select {
		case <-ev:
		case <-time.After(200 * time.Millisecond):
		}
	}
	if len(h) != n {
		t.Fatalf("phone has %d of %d messages %s after reconnecting", len(h), n, time.Since(start))
	}
	for i, m := range h {
		if m.ID != sent[i] {
			t.Fatalf("message %d out of order or duplicated", i)
		}
	}
	t.Logf("all %d delivered %s after reconnecting", n, time.Since(start).Round(time.Millisecond))

	// The phone's receipts reach alice: every message delivered to both of bob's devices.
	deadline = time.Now().Add(10 * time.Second)
	for {
		ah, _ := alice.store.History(ctx, DMConv("alice", "bob"), 0)
		done := 0
		for _, m := range ah {
			ok := len(m.Devices) == 2
			for _, d := range m.Devices {
				ok = ok && d.State == "delivered"
			}
			if ok {
				done++
			}
		}
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice sees %d of %d messages delivered to both devices", done, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lh, _ := laptop.store.History(ctx, DMConv("alice", "bob"), 0)
	if len(lh) != n {
		t.Fatalf("laptop has %d messages", len(lh))
	}
}

func TestBurstOfAThousand(t *testing.T) {
	sn := startSupernode(t)
	alice := startNode(t, initHome(t, "alice"), sn)
	bob := startNode(t, initHome(t, "bob"), sn)
	ctx := context.Background()
	const n = 1000
	for i := 0; i < n; i++ {
		if _, err := alice.Send(ctx, "bob", fmt.Sprintf("burst %04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		hb, _ := bob.store.History(ctx, DMConv("alice", "bob"), 0)
		if len(hb) == n {
			ha, _ := alice.store.History(ctx, DMConv("alice", "bob"), 0)
			seen := map[string]bool{}
			for i := range hb {
				if hb[i].ID != ha[i].ID {
					t.Fatalf("alice and bob differ at %d", i)
				}
				if want := fmt.Sprintf("burst %04d", i); hb[i].Body != want || seen[hb[i].ID] {
					t.Fatalf("message %d is %q, want %q once", i, hb[i].Body, want)
				}
				seen[hb[i].ID] = true
			}
			return
		}
		if len(hb) > n || time.Now().After(deadline) {
			t.Fatalf("bob has %d of %d", len(hb), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
