package mailboxserver

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/mailbox"
)

func newHost(t *testing.T) host.Host { return newHostOn(t, "127.0.0.1") }

// newHostOn starts a host listening on ip, a loopback address: on Linux
// all of 127.0.0.0/8 is loopback, and a host listening on one dials from
// it, so tests can show a mailbox peers from distinct addresses.
func newHostOn(t *testing.T, ip string) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/"+ip+"/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// newMailbox serves a mailbox that is the only holder of everything.
func newMailbox(t *testing.T, cfg Config) (*Server, host.Host) {
	t.Helper()
	h := newHost(t)
	cfg.Home, cfg.Host = t.TempDir(), h
	cfg.Closest = func(context.Context, string, int) ([]peer.ID, error) { return []peer.ID{h.ID()}, nil }
	if cfg.IsSupernode == nil {
		cfg.IsSupernode = func(peer.ID) bool { return false }
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, h
}

func connect(t *testing.T, a, b host.Host) {
	t.Helper()
	if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func item(id string, to, from peer.ID) mailbox.Item {
	acct := make([]byte, 32)
	rand.Read(acct)
	return mailbox.Item{ID: id, To: to.String(), Account: acct, From: from.String(), ExpiresMS: time.Now().Add(time.Hour).UnixMilli(), Env: []byte("sealed")}
}

func TestMailboxPutFetchAck(t *testing.T) {
	_, mb := newMailbox(t, Config{MaxPerRecipient: 3, MaxPerRecipientSrc: 3, MaxPerSender: 4})
	sender, device, stranger := newHost(t), newHost(t), newHost(t)
	for _, h := range []host.Host{sender, device, stranger} {
		connect(t, h, mb)
	}
	ctx := context.Background()

	res, err := mailbox.Put(ctx, sender, mb.ID(), []mailbox.Item{item("01", device.ID(), sender.ID()), item("02", device.ID(), sender.ID()), item("01", device.ID(), sender.ID())}, false)
	if err != nil || res[0].Err != "" || res[1].Err != "" || res[2].Err != "" {
		t.Fatalf("put: %+v %v", res, err)
	}
	// Quota per recipient: 3. A put beyond says why.
	res, _ = mailbox.Put(ctx, sender, mb.ID(), []mailbox.Item{item("03", device.ID(), sender.ID()), item("04", device.ID(), sender.ID())}, false)
	if res[0].Err != "" || !strings.Contains(res[1].Err, "full") {
		t.Fatalf("over the recipient quota: %+v", res)
	}
	// Nobody puts in another's name, and only a supernode puts replicas.
	res, _ = mailbox.Put(ctx, stranger, mb.ID(), []mailbox.Item{item("05", device.ID(), sender.ID())}, false)
	if !strings.Contains(res[0].Err, "not the peer") {
		t.Fatalf("put in another's name: %+v", res)
	}
	if _, err := mailbox.Put(ctx, stranger, mb.ID(), []mailbox.Item{item("06", device.ID(), stranger.ID())}, true); err == nil {
		t.Fatal("a stranger's replica was taken")
	}
	// Only the device takes its own mail.
	if _, err := mailbox.Fetch(ctx, stranger, mb.ID(), device.ID(), func(mailbox.Item) error { return nil }); err == nil {
		t.Fatal("a stranger fetched the device's mail")
	}
	var got []string
	n, err := mailbox.Fetch(ctx, device, mb.ID(), device.ID(), func(it mailbox.Item) error { got = append(got, it.ID); return nil })
	if err != nil || n != 3 || strings.Join(got, ",") != "01,02,03" {
		t.Fatalf("fetch: %d %v %v", n, got, err)
	}
	// Acknowledged mail is gone, and a late replica of it is not taken back.
	n, _ = mailbox.Fetch(ctx, device, mb.ID(), device.ID(), func(mailbox.Item) error { return nil })
	if n != 0 {
		t.Fatalf("%d items after acknowledgement", n)
	}
	mailbox.Put(ctx, sender, mb.ID(), []mailbox.Item{item("01", device.ID(), sender.ID())}, false)
	if n, _ := mailbox.Fetch(ctx, device, mb.ID(), device.ID(), func(mailbox.Item) error { return nil }); n != 0 {
		t.Fatal("a delivered envelope came back")
	}
	// An item the device could not commit for now stays.
	mailbox.Put(ctx, sender, mb.ID(), []mailbox.Item{item("07", device.ID(), sender.ID())}, false)
	mailbox.Fetch(ctx, device, mb.ID(), device.ID(), func(mailbox.Item) error { return mailbox.ErrRetryLater })
	if n, _ := mailbox.Fetch(ctx, device, mb.ID(), device.ID(), func(mailbox.Item) error { return nil }); n != 1 {
		t.Fatalf("item lost after a failed commit: %d", n)
	}
}

func TestMailboxExpiry(t *testing.T) {
	start := time.Now()
	var skew atomic.Int64 // the server's clock runs on another goroutine
	clock := func() time.Time { return start.Add(time.Duration(skew.Load())) }
	s, mb := newMailbox(t, Config{Now: clock, TTL: time.Hour, ReplicateInterval: 20 * time.Millisecond})
	sender, device := newHost(t), newHost(t)
	connect(t, sender, mb)
	connect(t, device, mb)
	it := item("0a", device.ID(), sender.ID())
	it.ExpiresMS = start.Add(24 * time.Hour).UnixMilli() // asks for longer than the TTL
	if res, err := mailbox.Put(context.Background(), sender, mb.ID(), []mailbox.Item{it}, false); err != nil || res[0].Err != "" {
		t.Fatalf("put: %+v %v", res, err)
	}
	skew.Store(int64(2 * time.Hour)) // past the mailbox's TTL
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _ := s.Count(); c == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("expired envelope still kept")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
