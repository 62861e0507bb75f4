package mailboxserver

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/mailbox"
)

// rawDel sends a del frame as an attacker would, whatever it holds.
func rawDel(t *testing.T, from host.Host, holder peer.ID, f mailbox.Frame) {
	t.Helper()
	s, err := from.NewStream(context.Background(), holder, mailbox.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	f.Type = "del"
	wire.WriteJSON(s, f, mailbox.MaxFrame)
	s.CloseWrite()
	buf := make([]byte, 1)
	s.Read(buf) // the holder's close or reset: it has handled the frame
	s.Close()
}

func fetchIDs(t *testing.T, device host.Host, holder peer.ID, ack bool) []string {
	t.Helper()
	var got []string
	_, err := mailbox.Fetch(context.Background(), device, holder, device.ID(), func(it mailbox.Item) error {
		got = append(got, it.ID)
		if !ack {
			return mailbox.ErrRetryLater
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestAttackDeleteOthersMail: a peer in the holder's routing table (a
// supernode, as far as the holder knows) tries to delete mail it has seen
// the ID of. Only the recipient device's own signed acknowledgement may.
func TestAttackDeleteOthersMail(t *testing.T) {
	attacker := newHost(t)
	_, mb := newMailbox(t, Config{IsSupernode: func(p peer.ID) bool { return p == attacker.ID() }})
	sender, device := newHost(t), newHost(t)
	for _, h := range []host.Host{sender, device, attacker} {
		connect(t, h, mb)
	}
	ctx := context.Background()
	if res, err := mailbox.Put(ctx, sender, mb.ID(), []mailbox.Item{item("d1", device.ID(), sender.ID()), item("d2", device.ID(), sender.ID())}, false); err != nil || res[0].Err != "" || res[1].Err != "" {
		t.Fatalf("put: %+v %v", res, err)
	}
	// A real proof by the device, for another envelope.
	devKey := device.Peerstore().PrivKey(device.ID())
	ts, sigOther, _ := mailbox.SignAck(devKey, time.Now(), []string{"ff"})
	// The attacker's own key, claiming to be the device.
	atkTS, atkSig, _ := mailbox.SignAck(attacker.Peerstore().PrivKey(attacker.ID()), time.Now(), []string{"d1"})
	// A proof by the device, from far outside the TTL.
	oldTS, oldSig, _ := mailbox.SignAck(devKey, time.Now().Add(-2*mailbox.DefaultTTL), []string{"d1"})
	dev := device.ID().String()
	for _, f := range []mailbox.Frame{
		{Device: dev, IDs: []string{"d1", "d2"}},                                      // no proof at all (today's del)
		{Device: dev, IDs: []string{"d1", "d2"}, TS: atkTS, Sig: atkSig},              // signed by someone else
		{Device: dev, IDs: []string{"d1"}, TS: ts, Sig: sigOther},                     // the device's proof for other IDs
		{Device: dev, IDs: []string{"d1"}, TS: oldTS, Sig: oldSig},                    // expired proof
		{Device: dev, IDs: []string{"d1"}, TS: ts, Sig: make([]byte, 64)},             // zero signature
		{Device: attacker.ID().String(), IDs: []string{"d1"}, TS: atkTS, Sig: atkSig}, // own proof, other device's mail: no match
	} {
		rawDel(t, attacker, mb.ID(), f)
	}
	if got := fetchIDs(t, device, mb.ID(), false); strings.Join(got, ",") != "d1,d2" {
		t.Fatalf("after the attacker's deletes the device gets %v, want d1,d2", got)
	}
	// The device's own acknowledgement, passed on by anyone, does delete.
	ts, sig, _ := mailbox.SignAck(devKey, time.Now(), []string{"d1"})
	rawDel(t, attacker, mb.ID(), mailbox.Frame{Device: dev, IDs: []string{"d1"}, TS: ts, Sig: sig})
	if got := fetchIDs(t, device, mb.ID(), true); strings.Join(got, ",") != "d2" {
		t.Fatalf("after the device's proof: %v, want d2", got)
	}
}

// TestAckReplicatesDelete: a device's acknowledgement at one holder reaches
// the other holder with its proof, which deletes there too.
func TestAckReplicatesDelete(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	holders := []peer.ID{ha.ID(), hb.ID()}
	isSN := func(p peer.ID) bool { return p == ha.ID() || p == hb.ID() }
	mk := func(h host.Host) *Server {
		s, err := NewServer(Config{Home: t.TempDir(), Host: h, IsSupernode: isSN, Logger: quietLog(),
			Closest: func(context.Context, string, int) ([]peer.ID, error) { return holders, nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	_, b := mk(ha), mk(hb)
	connect(t, ha, hb)
	sender, device := newHost(t), newHost(t)
	connect(t, sender, ha)
	connect(t, sender, hb)
	connect(t, device, ha)
	it := item("a1", device.ID(), sender.ID())
	for _, h := range holders {
		if res, err := mailbox.Put(context.Background(), sender, h, []mailbox.Item{it}, false); err != nil || res[0].Err != "" {
			t.Fatalf("put: %+v %v", res, err)
		}
	}
	if got := fetchIDs(t, device, ha.ID(), true); len(got) != 1 {
		t.Fatalf("fetched %v", got)
	}
	waitFor(t, "the other holder deleting the acknowledged envelope", func() bool { c, _ := b.Count(); return c == 0 })
}

// TestAttackQuotaFreeIdentities: identities are free, so an attacker uses
// many from one address to fill frank's mailbox. It fills only its
// prefix's share, and carol, from elsewhere, still gets through.
func TestAttackQuotaFreeIdentities(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, mb := newMailbox(t, Config{MaxPerRecipient: 16, Registerer: reg}) // a prefix's share: 2
	frank := newHost(t)
	ctx := context.Background()
	refused := 0
	for i := 0; i < 4; i++ {
		atk := newHostOn(t, "127.0.1.2")
		connect(t, atk, mb)
		var items []mailbox.Item
		for j := 0; j < 16; j++ {
			items = append(items, item(fmt.Sprintf("a%d%02d", i, j), frank.ID(), atk.ID()))
		}
		res, err := mailbox.Put(ctx, atk, mb.ID(), items, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != "" {
				if !strings.Contains(r.Err, "("+ReasonRecipientSrc+")") {
					t.Fatalf("refused for %q, want %s", r.Err, ReasonRecipientSrc)
				}
				refused++
			}
		}
	}
	if refused != 4*16-2 {
		t.Fatalf("%d of 64 refused, want 62", refused)
	}
	if n := refusals(t, reg, ReasonRecipientSrc); n != 62 {
		t.Fatalf("refusal metric %v, want 62", n)
	}
	carol := newHostOn(t, "127.0.2.3")
	connect(t, carol, mb)
	if res, err := mailbox.Put(ctx, carol, mb.ID(), []mailbox.Item{item("c1", frank.ID(), carol.ID())}, false); err != nil || res[0].Err != "" {
		t.Fatalf("carol's real message: %+v %v", res, err)
	}
}

// TestAttackDiskFill: one client with many identities tries to fill the
// supernode's disk with the largest envelopes to ever more recipients. The
// per-IP, per-prefix and global byte caps stop it, each with its reason.
func TestAttackDiskFill(t *testing.T) {
	const env = mailbox.MaxEnvelope // 96 KiB
	_, mb := newMailbox(t, Config{MaxBytesPerIP: 4 * env, MaxBytesPerPrefix: 6 * env, MaxBytes: 9 * env})
	ctx := context.Background()
	big := func(id string, from peer.ID) mailbox.Item {
		d := newRandomPeer(t)
		it := item(id, d, from)
		it.Env = make([]byte, env)
		return it
	}
	cases := []struct {
		name, ip string
		stored   int
		reason   string
	}{
		{"one address", "127.0.3.2", 4, ReasonSourceIP},
		{"its neighbour in the /24", "127.0.3.3", 2, ReasonSourcePrefix},
		{"another prefix, until the disk cap", "127.0.4.2", 3, ReasonGlobal},
	}
	n := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stored := 0
			for i := 0; i < 6; i++ { // a fresh identity for each envelope
				atk := newHostOn(t, tc.ip)
				connect(t, atk, mb)
				n++
				res, err := mailbox.Put(ctx, atk, mb.ID(), []mailbox.Item{big(fmt.Sprintf("%04x", n), atk.ID())}, false)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case res[0].Err == "":
					stored++
				case !strings.Contains(res[0].Err, "("+tc.reason+")"):
					t.Fatalf("refused for %q, want %s", res[0].Err, tc.reason)
				}
			}
			if stored != tc.stored {
				t.Fatalf("%d stored, want %d", stored, tc.stored)
			}
		})
	}
}

// TestReplicaChargedToSender: a replica is charged to the address the
// first holder took it from, not to the holder that passes it on, so a
// holder's own address never runs out of quota; a non-supernode cannot
// name a source address.
func TestReplicaChargedToSender(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	holders := []peer.ID{ha.ID(), hb.ID()}
	isSN := func(p peer.ID) bool { return p == ha.ID() || p == hb.ID() }
	mk := func(h host.Host) *Server {
		s, err := NewServer(Config{Home: t.TempDir(), Host: h, IsSupernode: isSN, Logger: quietLog(),
			MaxBytesPerIP: 2 * 6, ReplicateInterval: 50 * time.Millisecond,
			Closest: func(context.Context, string, int) ([]peer.ID, error) { return holders, nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	_, b := mk(ha), mk(hb)
	connect(t, ha, hb)
	s1, s2 := newHostOn(t, "127.0.5.2"), newHostOn(t, "127.0.6.2")
	for i, s := range []host.Host{s1, s2} {
		connect(t, s, ha)
		res, err := mailbox.Put(context.Background(), s, ha.ID(), []mailbox.Item{item(fmt.Sprintf("b%d1", i), newRandomPeer(t), s.ID()), item(fmt.Sprintf("b%d2", i), newRandomPeer(t), s.ID())}, false)
		if err != nil || res[0].Err != "" || res[1].Err != "" {
			t.Fatalf("put from %d: %+v %v", i, res, err)
		}
	}
	waitFor(t, "all four envelopes replicated", func() bool { c, _ := b.Count(); return c == 4 })
	rows, err := b.db.Query(`SELECT src_ip, COUNT(*) FROM items GROUP BY src_ip ORDER BY src_ip`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var ip string
		var c int
		rows.Scan(&ip, &c)
		got = append(got, fmt.Sprintf("%s=%d", ip, c))
	}
	rows.Close()
	if strings.Join(got, " ") != "127.0.5.2=2 127.0.6.2=2" {
		t.Fatalf("replicas charged to %v", got)
	}
	// A client naming another source on a direct put is charged to itself.
	c := newHostOn(t, "127.0.7.2")
	connect(t, c, hb)
	it := item("c1", newRandomPeer(t), c.ID())
	it.Src = "127.0.5.2"
	if res, _ := mailbox.Put(context.Background(), c, hb.ID(), []mailbox.Item{it}, false); res == nil || res[0].Err != "" {
		t.Fatalf("put naming a source: %+v", res)
	}
	var src string
	b.db.QueryRow(`SELECT src_ip FROM items WHERE id='c1'`).Scan(&src)
	if src != "127.0.7.2" {
		t.Fatalf("a direct put was charged to %q", src)
	}
}

// refusals is the value of parley_mailbox_refused_total{reason} in reg.
func refusals(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "parley_mailbox_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func newRandomPeer(t *testing.T) peer.ID {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(priv)
	return id
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMailboxFilesPrivate: the mailbox database and its WAL are 0600 even
// when the home and an old database were readable by others.
func TestMailboxFilesPrivate(t *testing.T) {
	home := t.TempDir()
	os.Chmod(home, 0o755)
	os.WriteFile(filepath.Join(home, "mailbox.db"), nil, 0o644)
	os.Chmod(filepath.Join(home, "mailbox.db"), 0o644)
	h := newHost(t)
	s, err := NewServer(Config{Home: home, Host: h, Logger: quietLog(), IsSupernode: func(peer.ID) bool { return false },
		Closest: func(context.Context, string, int) ([]peer.ID, error) { return []peer.ID{h.ID()}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sender := newHost(t)
	connect(t, sender, h)
	if res, err := mailbox.Put(context.Background(), sender, h.ID(), []mailbox.Item{item("0f", newRandomPeer(t), sender.ID())}, false); err != nil || res[0].Err != "" {
		t.Fatalf("put: %+v %v", res, err)
	}
	for _, f := range []string{"mailbox.db", "mailbox.db-wal", "mailbox.db-shm"} {
		info, err := os.Stat(filepath.Join(home, f))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s is %o, want 600", f, info.Mode().Perm())
		}
	}
}
