package mailbox

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
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

func item(id string, to, from peer.ID) Item {
	acct := make([]byte, 32)
	rand.Read(acct)
	return Item{ID: id, To: to.String(), Account: acct, From: from.String(), ExpiresMS: time.Now().Add(time.Hour).UnixMilli(), Env: []byte("sealed")}
}

func TestMailboxPutFetchAck(t *testing.T) {
	_, mb := newMailbox(t, Config{MaxPerRecipient: 3, MaxPerRecipientSrc: 3, MaxPerSender: 4})
	sender, device, stranger := newHost(t), newHost(t), newHost(t)
	for _, h := range []host.Host{sender, device, stranger} {
		connect(t, h, mb)
	}
	ctx := context.Background()

	res, err := Put(ctx, sender, mb.ID(), []Item{item("01", device.ID(), sender.ID()), item("02", device.ID(), sender.ID()), item("01", device.ID(), sender.ID())}, false)
	if err != nil || res[0].Err != "" || res[1].Err != "" || res[2].Err != "" {
		t.Fatalf("put: %+v %v", res, err)
	}
	// Quota per recipient: 3. A put beyond says why.
	res, _ = Put(ctx, sender, mb.ID(), []Item{item("03", device.ID(), sender.ID()), item("04", device.ID(), sender.ID())}, false)
	if res[0].Err != "" || !strings.Contains(res[1].Err, "full") {
		t.Fatalf("over the recipient quota: %+v", res)
	}
	// Nobody puts in another's name, and only a supernode puts replicas.
	res, _ = Put(ctx, stranger, mb.ID(), []Item{item("05", device.ID(), sender.ID())}, false)
	if !strings.Contains(res[0].Err, "not the peer") {
		t.Fatalf("put in another's name: %+v", res)
	}
	if _, err := Put(ctx, stranger, mb.ID(), []Item{item("06", device.ID(), stranger.ID())}, true); err == nil {
		t.Fatal("a stranger's replica was taken")
	}
	// Only the device takes its own mail.
	if _, err := Fetch(ctx, stranger, mb.ID(), device.ID(), func(Item) error { return nil }); err == nil {
		t.Fatal("a stranger fetched the device's mail")
	}
	var got []string
	n, err := Fetch(ctx, device, mb.ID(), device.ID(), func(it Item) error { got = append(got, it.ID); return nil })
	if err != nil || n != 3 || strings.Join(got, ",") != "01,02,03" {
		t.Fatalf("fetch: %d %v %v", n, got, err)
	}
	// Acknowledged mail is gone, and a late replica of it is not taken back.
	n, _ = Fetch(ctx, device, mb.ID(), device.ID(), func(Item) error { return nil })
	if n != 0 {
		t.Fatalf("%d items after acknowledgement", n)
	}
	Put(ctx, sender, mb.ID(), []Item{item("01", device.ID(), sender.ID())}, false)
	if n, _ := Fetch(ctx, device, mb.ID(), device.ID(), func(Item) error { return nil }); n != 0 {
		t.Fatal("a delivered envelope came back")
	}
	// An item the device could not commit for now stays.
	Put(ctx, sender, mb.ID(), []Item{item("07", device.ID(), sender.ID())}, false)
	Fetch(ctx, device, mb.ID(), device.ID(), func(Item) error { return ErrRetryLater })
	if n, _ := Fetch(ctx, device, mb.ID(), device.ID(), func(Item) error { return nil }); n != 1 {
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
	if res, err := Put(context.Background(), sender, mb.ID(), []Item{it}, false); err != nil || res[0].Err != "" {
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

// sig64 is 64 zero bytes in base64: a signature of the right length.
var sig64 = base64.StdEncoding.EncodeToString(make([]byte, 64))

func TestDecodeFrame(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"end", `{"t":"end"}`, true},
		{"fetch", `{"t":"fetch","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}`, true},
		{"fetch bad device", `{"t":"fetch","device":"x"}`, false},
		{"ack", `{"t":"ack","ids":["0a"],"ts_ms":1,"sig":"` + sig64 + `"}`, true},
		{"ack unsigned", `{"t":"ack","ids":["0a"]}`, false},
		{"ack short sig", `{"t":"ack","ids":["0a"],"ts_ms":1,"sig":"AAAA"}`, false},
		{"del", `{"t":"del","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","ids":["0a"],"ts_ms":1,"sig":"` + sig64 + `"}`, true},
		{"del unsigned", `{"t":"del","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","ids":["0a"]}`, false},
		{"ack none", `{"t":"ack","ids":[]}`, false},
		{"put none", `{"t":"put","items":[]}`, false},
		{"put bad item", `{"t":"put","items":[{"id":"zz"}]}`, false},
		{"unknown", `{"t":"steal"}`, false},
		{"extra field", `{"t":"end","x":1}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeFrame([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeFrame = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("%v does not wrap ErrBadFrame", err)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"t":"put","items":[{"id":"0a","to":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","account":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","from":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","expires_ms":1,"env":"AA=="}]}`))
	f.Add([]byte(`{"t":"ack","ids":["0a"]}`))
	f.Add([]byte(`{"t":"ack","ids":["0a"],"ts_ms":1,"sig":"` + sig64 + `"}`))
	f.Add([]byte(`{"t":"del","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","ids":["0a","0b"],"ts_ms":1,"sig":"` + sig64 + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if fr.Type == "ack" || fr.Type == "del" {
			if len(fr.IDs) > MaxAckIDs || len(fr.Sig) != ackSigLen {
				t.Fatal("accepted an out-of-bounds proof")
			}
			// Checking a proof of any shape must not panic; a zero or
			// random signature never verifies.
			if VerifyAck(fr.Device, fr.TS, fr.IDs, fr.Sig, time.UnixMilli(fr.TS), DefaultTTL) == nil {
				t.Fatal("a fuzzed proof verified")
			}
		}
		for _, it := range fr.Items {
			if len(it.Env) > MaxEnvelope || len(it.Account) != 32 {
				t.Fatal("accepted an out-of-bounds item")
			}
		}
	})
}
