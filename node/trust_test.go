package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/mailbox"
)

// attacker is a small client with its own keys that claims to be someone
// else: an identity for the victim's handle under its own account key, and
// a bare libp2p host with that identity's device key.
type attacker struct {
	id *Identity
	h  host.Host
}

func newAttacker(t *testing.T, handle string) *attacker {
	t.Helper()
	id, err := InitIdentity(t.TempDir(), handle, "mallory", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(id.DeviceKey), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &attacker{id: id, h: h}
}

// forge seals a message "from" the attacker's handle to a device of to.
func (a *attacker) forge(t *testing.T, to *Identity, body string) (string, []byte) {
	t.Helper()
	conv := DMConv(a.id.Handle(), to.Handle())
	p := &Payload{Kind: kindMessage, ID: newMessageID(time.Now()), Conv: conv, Lamport: 1, SentMS: time.Now().UnixMilli(), Body: body}
	env, err := sealEnvelope(a.id, p, p.ID, to.Self())
	if err != nil {
		t.Fatal(err)
	}
	return p.ID, env
}

// sendDirect hands an envelope to n over the chat protocol and returns n's ack.
func sendDirect(t *testing.T, h host.Host, n *Node, env []byte) *chatFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, n.ID(), ChatProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(20 * time.Second))
	if err := wire.WriteJSON(s, chatFrame{Type: "env", Env: env}, MaxChatFrame); err != nil {
		t.Fatal(err)
	}
	b, err := wire.ReadFrame(s, MaxChatFrame)
	if err != nil {
		t.Fatalf("no ack: %v", err)
	}
	f, err := decodeChatFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func bodies(ms []Message) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.From+": "+m.Body)
	}
	return strings.Join(out, " | ")
}

// waitBody polls a device's store until a conversation holds a message
// with body, or fails at the deadline.
func waitBody(t *testing.T, n *Node, conv, body string, d time.Duration) []Message {
	t.Helper()
	ev, stop := n.Subscribe()
	defer stop()
	deadline := time.After(d)
	for {
		h, err := n.store.History(context.Background(), conv, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range h {
			if m.Body == body {
				return h
			}
		}
		select {
		case <-ev:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%q not in %s within %s; history: %s", body, conv, d, bodies(h))
		}
	}
}

// An envelope "from alice" signed by another account, with a self-signed
// record for handle alice, is held: not acknowledged, not in history, and
// it does not lock the real alice out.
func TestForgedEnvelopeHeld(t *testing.T) {
	sn := startSupernode(t)
	alice := startNode(t, initHome(t, "alice"), sn)
	bob := startNode(t, initHome(t, "bob"), sn)
	mallory := newAttacker(t, "alice")
	ctx := context.Background()

	_, forged := mallory.forge(t, bob.Identity(), "FORGED: bob, this is alice. wire me 500 EUR")
	if f := sendDirect(t, mallory.h, bob, forged); f.Err == "" || !f.Held {
		t.Fatalf("bob answered a forged envelope with %+v, want a held refusal", f)
	}
	if h, _ := bob.History(ctx, "alice", 0); len(h) != 0 {
		t.Fatalf("bob's history with alice after the forgery: %s", bodies(h))
	}

	res, err := alice.Send(ctx, "bob", "the real alice")
	if err != nil || len(res.Delivered) != 1 {
		t.Fatalf("the real alice after a forgery: %+v, %v", res, err)
	}
	// Once alice is pinned, the forger is still held, never taken for her.
	_, again := mallory.forge(t, bob.Identity(), "FORGED again")
	if f := sendDirect(t, mallory.h, bob, again); f.Err == "" || !f.Held {
		t.Fatalf("bob answered a second forgery with %+v", f)
	}
	h, _ := bob.History(ctx, "alice", 0)
	if len(h) != 1 || h[0].Body != "the real alice" {
		t.Fatalf("bob's history with alice: %s", bodies(h))
	}
	who, err := bob.Resolve(ctx, "alice")
	if err != nil || who.Fingerprint != alice.Identity().Fingerprint() {
		t.Fatalf("bob's whois alice: %+v, %v", who, err)
	}
}

// The same forgery through bob's mailbox while he is offline is held by
// the mailbox, and the real alice's mail behind it is delivered.
func TestForgedEnvelopeHeldViaMailbox(t *testing.T) {
	sn := startSupernode(t)
	bobHome := initHome(t, "bob")
	bob := startNode(t, bobHome, sn) // publishes bob's record, then goes away
	bobID, bobAcct := bob.Identity(), bob.Identity().AccountPub
	bob.Close()
	alice := startNode(t, initHome(t, "alice"), sn)
	mallory := newAttacker(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	id, forged := mallory.forge(t, bobID, "FORGED: bob, this is alice. wire me 500 EUR")
	if err := mallory.h.Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	res, err := mailbox.Put(ctx, mallory.h, sn.ID(), []mailbox.Item{{ID: id, To: bobID.PeerID.String(), Account: bobAcct,
		From: mallory.h.ID().String(), ExpiresMS: time.Now().Add(time.Hour).UnixMilli(), Env: forged}})
	if err != nil || len(res) != 1 || res[0].Err != "" {
		t.Fatalf("mallory's deposit: %+v, %v", res, err)
	}
	// Send returns within a second; the mailbox deposit may finish after.
	sent, err := alice.Send(ctx, "bob", "the real alice, by mail")
	if err != nil || len(sent.Mailbox)+len(sent.Queued) != 1 {
		t.Fatalf("alice's mail to offline bob: %+v, %v", sent, err)
	}

	bob = startNode(t, bobHome, sn)
	h := waitBody(t, bob, DMConv("alice", "bob"), "the real alice, by mail", 20*time.Second)
	if len(h) != 1 {
		t.Fatalf("bob's history with alice: %s", bodies(h))
	}
	if w, err := bob.Resolve(ctx, "alice"); err != nil || w.Fingerprint != alice.Identity().Fingerprint() {
		t.Fatalf("bob's whois alice: %+v, %v", w, err)
	}
}

// testSDP is an offer with a DTLS fingerprint: enough for an invite to be
// checked, never answered here.
const testSDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
	"a=fingerprint:sha-256 9A:6B:11:0F:3C:7E:85:21:D4:5A:00:FF:13:88:71:BC:2E:AD:6C:91:0B:47:3A:D2:55:C9:81:3E:F0:06:17:4D\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"

// invite sends a call invite as handle with record from h to n and returns
// n's first answer.
func invite(t *testing.T, h host.Host, n *Node, handle string, rec []byte) *callFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, n.ID(), CallProtocol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	s.SetDeadline(time.Now().Add(20 * time.Second))
	call := newMessageID(time.Now())
	if err := wire.WriteJSON(s, callFrame{Type: sigInvite, Call: call, Seq: 1, From: handle, Record: rec, SDP: testSDP}, MaxCallFrame); err != nil {
		t.Fatal(err)
	}
	b, err := wire.ReadFrame(s, MaxCallFrame)
	if err != nil {
		t.Fatalf("no answer to the invite: %v", err)
	}
	f, err := decodeCallFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A call invite "from alice" by another account is rejected and does not
// ring; the real alice's invite afterwards rings.
func TestForgedCallInviteRefused(t *testing.T) {
	sn := startSupernode(t)
	alice := startNode(t, initHome(t, "alice"), sn)
	bob := startNode(t, initHome(t, "bob"), sn)
	mallory := newAttacker(t, "alice")
	ev, stop := bob.Subscribe()
	defer stop()

	if f := invite(t, mallory.h, bob, "alice", mallory.id.Record()); f.Type != sigReject {
		t.Fatalf("bob answered a forged invite with %s, want reject", f.Type)
	}
	select {
	case e := <-ev:
		if e.Type == "call" {
			t.Fatalf("a forged invite rang: %+v", e.Call)
		}
	default:
	}
	if f := invite(t, alice.Host(), bob, "alice", alice.Identity().Record()); f.Type != sigRinging {
		t.Fatalf("bob answered the real alice's invite with %s (%s), want ringing", f.Type, f.Reason)
	}
}

// permissive is a rogue DHT server's validator: it stores anything and
// keeps what it stored. (The DHT's PUT handler calls Select with {incoming,
// stored}: preferring index 0 let the real alice's republish, which a new
// DHT server nearby triggers, overwrite the rogue's forgery now and then.)
type permissive struct{}

func (permissive) Validate(string, []byte) error { return nil }
func (permissive) Select(_ string, vs [][]byte) (int, error) {
	return len(vs) - 1, nil
}

// startRogue starts a DHT server that joins the supernodes' DHT and serves
// whatever it is given, and waits until every supernode has it in its
// routing table, so it is asked in lookups.
func startRogue(t *testing.T, net *snet) (crypto.PrivKey, host.Host, *dht.IpfsDHT) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx := context.Background()
	d, err := dht.New(ctx, h, dht.Mode(dht.ModeServer), dht.ProtocolPrefix(discovery.ProtocolPrefix),
		dht.Validator(record.NamespacedValidator{discovery.HandleNamespace: permissive{}}),
		dht.AddressFilter(nil), dht.BootstrapPeers(net.infos()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, pi := range net.infos() {
		if err := h.Connect(ctx, pi); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, sn := range net.sns {
		for sn.DHT().RoutingTable().Find(h.ID()) == "" {
			if time.Now().After(deadline) {
				t.Fatalf("supernode %s never took the rogue into its routing table", sn.ID().ShortString())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return key, h, d
}

// A rogue DHT server answers for alice with a back-dated record: an early
// self-written Claimed time, its own back-dated witness, a witness forged in
// an honest supernode's name and alice's witnesses copied. A fresh device's
// whois alice still returns the real alice and shows the disagreement, even
// when the rogue is one of the supernodes it trusts.
func TestBackDatedClaimLoses(t *testing.T) {
	net := startSupernodes(t, 3)
	alice := startOn(t, initHome(t, "alice"), net)
	rogueKey, rogueHost, rogueDHT := startRogue(t, net)

	_, mk, _ := ed25519.GenerateKey(rand.Reader)
	mpub := mk.Public().(ed25519.PublicKey)
	own, err := discovery.SignWitness(rogueKey, "alice", mpub, 1000)
	if err != nil {
		t.Fatal(err)
	}
	inHonestName := *own
	inHonestName.By = net.sns[0].ID().String()
	ws := append([]discovery.Witness{*own, inHonestName}, alice.Identity().Witnesses()...)
	forged := &discovery.HandleRecord{V: 1, Handle: "alice", Seq: 1 << 60, Claimed: 1,
		Devices:   []discovery.Device{{PeerID: rogueHost.ID().String(), BoxKey: make([]byte, 32)}},
		Expires:   time.Now().Add(24 * time.Hour).Unix(),
		Witnesses: ws[:min(len(ws), discovery.MaxWitnesses)]}
	if err := forged.Sign(mk); err != nil {
		t.Fatal(err)
	}
	b, err := forged.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rogueDHT.PutValue(ctx, discovery.HandleKey("alice"), b); err != nil {
		t.Fatal(err)
	}
	rogueInfo := peer.AddrInfo{ID: rogueHost.ID(), Addrs: rogueHost.Addrs()}

	for _, tc := range []struct {
		name   string
		handle string // of the fresh device
		boot   []peer.AddrInfo
	}{
		{"rogue untrusted", "dave", net.infos()},
		{"rogue among the trusted supernodes", "erin", append(net.infos(), rogueInfo)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fresh := startOnWith(t, initHome(t, tc.handle), tc.boot)
			who, err := fresh.Resolve(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if who.Fingerprint != alice.Identity().Fingerprint() {
				t.Fatalf("whois alice gave fingerprint %s, want the real alice's %s", who.Fingerprint, alice.Identity().Fingerprint())
			}
			if !who.Disagree || len(who.Claims) != 2 || who.Claims[1].Fingerprint != discovery.Fingerprint(mpub) || !who.Claims[0].Chosen {
				t.Fatalf("whois does not show the rogue's answer: %+v", who)
			}
		})
	}
}

// After every supernode restarts with empty state and an attacker claims
// alice first (with fresh witnesses of its own), the real alice's daemon
// still starts, and a new device's whois alice returns her once she has
// republished her earlier-witnessed record.
func TestHandleSurvivesSupernodeAmnesia(t *testing.T) {
	net := startSupernodes(t, 3)
	aliceHome := initHome(t, "alice")
	alice := startOn(t, aliceHome, net)
	fp := alice.Identity().Fingerprint()
	if n := len(alice.Identity().Witnesses()); n != 3 {
		t.Fatalf("alice holds %d witnesses, want one per supernode", n)
	}
	alice.Close()

	for i, sn := range net.sns {
		sn.Close()
		net.sns[i] = nil
		// Amnesia: the claim witnesses and the DHT records on disk go
		// (the key stays: the same supernodes, empty).
		if err := os.Remove(filepath.Join(net.homes[i], "claims.jsonl")); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(net.homes[i], "dht")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range net.sns {
		net.start(i)
	}

	// mallory claims alice on the amnesiac network, witnesses and all.
	mallory := newAttacker(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	md, err := discovery.NewDHT(ctx, mallory.h, discovery.DHTConfig{Bootstrap: net.infos()})
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	if _, err := discovery.Bootstrap(ctx, mallory.h, net.infos(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := discovery.WaitRoutable(ctx, md); err != nil {
		t.Fatal(err)
	}
	var ws []discovery.Witness
	for _, sn := range net.sns {
		w, err := discovery.RequestWitness(ctx, mallory.h, sn.ID(), "alice", mallory.id.AccountPub)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, *w)
	}
	if _, err := mallory.id.AddWitnesses(ws, nil); err != nil {
		t.Fatal(err)
	}
	rec, err := mallory.id.Resign(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := discovery.Publish(ctx, md, rec); err != nil {
		t.Fatal(err)
	}
	if l, err := discovery.LookupHandle(ctx, md, "alice"); err != nil || !bytes.Equal(l.Best.Account, mallory.id.AccountPub) {
		t.Fatalf("mallory's claim did not land: %+v, %v", l, err)
	}

	alice = startOn(t, aliceHome, net)
	dave := startOn(t, initHome(t, "dave"), net)
	who, err := dave.Resolve(ctx, "alice")
	if err != nil || who.Fingerprint != fp {
		t.Fatalf("a new device's whois alice: %+v, %v; want fingerprint %s", who, err, fp)
	}
	// mallory's republish does not take it back.
	rec, _ = mallory.id.Resign(time.Now())
	if err := discovery.Publish(ctx, md, rec); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	carol := startOn(t, initHome(t, "carol"), net)
	if who, err := carol.Resolve(ctx, "alice"); err != nil || who.Fingerprint != fp {
		t.Fatalf("whois alice after mallory republished: %+v, %v", who, err)
	}
}
