package discovery

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

var t0 = time.Unix(1_800_000_000, 0)

func newDevice(t testing.TB) Device {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return Device{PeerID: id.String(), BoxKey: make([]byte, 32), Name: "laptop"}
}

func newAccount(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signed(t testing.TB, acct ed25519.PrivateKey, handle string, seq uint64, claimed time.Time, dev ...Device) []byte {
	t.Helper()
	r := &HandleRecord{V: 1, Handle: handle, Devices: dev, Seq: seq, Claimed: claimed.Unix(), Expires: t0.Add(24 * time.Hour).Unix()}
	if err := r.Sign(acct); err != nil {
		t.Fatal(err)
	}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandleValidate(t *testing.T) {
	acct := newAccount(t)
	dev := newDevice(t)
	good := signed(t, acct, "alice", 1, t0.Add(-time.Hour), dev)
	v := HandleValidator{Now: func() time.Time { return t0 }}

	tampered := []byte(strings.Replace(string(good), `"seq":1`, `"seq":9`, 1))
	expired := func() []byte {
		r := &HandleRecord{V: 1, Handle: "alice", Devices: []Device{dev}, Seq: 1, Claimed: t0.Add(-48 * time.Hour).Unix(), Expires: t0.Add(-time.Second).Unix()}
		r.Sign(acct)
		b, _ := r.Marshal()
		return b
	}()
	tooLong := func() []byte {
		r := &HandleRecord{V: 1, Handle: "alice", Devices: []Device{dev}, Seq: 1, Claimed: t0.Unix(), Expires: t0.Add(MaxRecordTTL + time.Hour).Unix()}
		r.Sign(acct)
		b, _ := r.Marshal()
		return b
	}()
	otherKeySig := func() []byte {
		r, _ := ParseHandleRecord(good)
		other := newAccount(t)
		msg, _ := r.signedBytes()
		r.Sig = ed25519.Sign(other, msg)
		b, _ := r.Marshal()
		return b
	}()

	cases := []struct {
		name string
		key  string
		val  []byte
		err  error
	}{
		{"good", HandleKey("alice"), good, nil},
		{"wrong key", HandleKey("bob"), good, ErrBadRecord},
		{"other namespace", "/pk/alice", good, ErrBadRecord},
		{"tampered", HandleKey("alice"), tampered, ErrBadSignature},
		{"signed by another key", HandleKey("alice"), otherKeySig, ErrBadSignature},
		{"expired", HandleKey("alice"), expired, ErrExpired},
		{"lifetime too long", HandleKey("alice"), tooLong, ErrBadRecord},
		{"garbage", HandleKey("alice"), []byte("{not json"), ErrBadRecord},
		{"oversized", HandleKey("alice"), make([]byte, MaxRecordSize+1), ErrBadRecord},
		{"bad handle", HandleKey("A!"), good, ErrBadHandle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Validate(tc.key, tc.val)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Validate = %v, want %v", err, tc.err)
			}
		})
	}
}

// supernodeKey is a supernode's libp2p key and peer ID.
func supernodeKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func witness(t testing.TB, k crypto.PrivKey, acct ed25519.PrivateKey, handle string, seen time.Time) Witness {
	t.Helper()
	w, err := SignWitness(k, handle, acct.Public().(ed25519.PublicKey), seen.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return *w
}

func witnessed(t testing.TB, acct ed25519.PrivateKey, handle string, seq uint64, claimed time.Time, ws []Witness, dev ...Device) []byte {
	t.Helper()
	r := &HandleRecord{V: 1, Handle: handle, Devices: dev, Seq: seq, Claimed: claimed.UnixMilli(), Expires: t0.Add(24 * time.Hour).Unix(), Witnesses: ws}
	if err := r.Sign(acct); err != nil {
		t.Fatal(err)
	}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandleSelect(t *testing.T) {
	alice := newAccount(t)
	mallory := newAccount(t)
	dev := newDevice(t)
	k1, s1 := supernodeKey(t)
	k2, s2 := supernodeKey(t)
	k3, s3 := supernodeKey(t)
	rogueKey, rogue := supernodeKey(t)
	early, late := t0.Add(-time.Hour), t0.Add(-time.Minute)
	aliceWs := []Witness{witness(t, k1, alice, "alice", early), witness(t, k2, alice, "alice", early.Add(time.Second))}
	first := witnessed(t, alice, "alice", 1, early, aliceWs, dev)
	update := witnessed(t, alice, "alice", 2, early, aliceWs, dev, newDevice(t))
	// mallory writes an earlier Claimed herself: it counts for nothing.
	selfDated := witnessed(t, mallory, "alice", 5, t0.Add(-48*time.Hour), []Witness{witness(t, k1, mallory, "alice", late), witness(t, k2, mallory, "alice", late)}, newDevice(t))
	// A rogue supernode back-dates its own witness; the honest one saw her late.
	backDated := witnessed(t, mallory, "alice", 5, t0.Add(-48*time.Hour), []Witness{witness(t, rogueKey, mallory, "alice", t0.Add(-72*time.Hour)), witness(t, k3, mallory, "alice", late)}, newDevice(t))
	// Witnesses copied from alice's record do not fit mallory's account.
	stolen := witnessed(t, mallory, "alice", 5, t0.Add(-48*time.Hour), aliceWs, newDevice(t))
	// A forged witness in an honest supernode's name does not verify.
	forgedW := witness(t, rogueKey, mallory, "alice", t0.Add(-72*time.Hour))
	forgedW.By = s1.String()
	forged := witnessed(t, mallory, "alice", 5, t0.Add(-48*time.Hour), []Witness{forgedW, witness(t, k2, mallory, "alice", late)}, newDevice(t))
	unwitnessed := witnessed(t, mallory, "alice", 5, t0.Add(-48*time.Hour), nil, newDevice(t))
	laterAlice := witnessed(t, alice, "alice", 1, early, []Witness{witness(t, k1, alice, "alice", late), witness(t, k2, alice, "alice", late)}, dev)
	earlyMallory := witnessed(t, mallory, "alice", 5, early, []Witness{witness(t, k1, mallory, "alice", early.Add(-time.Second)), witness(t, k2, mallory, "alice", early.Add(-time.Second))}, newDevice(t))

	now := func() time.Time { return t0 }
	trusted := []peer.ID{s1, s2, s3}
	server := HandleValidator{Now: now, PreferExisting: true, Trusted: trusted}
	client := HandleValidator{Now: now, Trusted: trusted}
	rogueTrusted := HandleValidator{Now: now, Trusted: append([]peer.ID{rogue}, trusted...)}
	oneSupernode := HandleValidator{Now: now, Trusted: []peer.ID{s1}}
	cases := []struct {
		name string
		v    HandleValidator
		recs [][]byte // {incoming, stored} for the server
		want int
	}{
		{"server takes a newer seq of the same account", server, [][]byte{update, first}, 0},
		{"server keeps a newer seq over an older one", server, [][]byte{first, update}, 1},
		{"server refreshes an identical republish", server, [][]byte{first, first}, 0},
		{"server refuses a later rival claim", server, [][]byte{selfDated, first}, 1},
		{"server takes an earlier-witnessed claim over a stored later one", server, [][]byte{first, selfDated}, 0},
		{"server keeps the stored claim on equal ranks", server, [][]byte{unwitnessed, witnessed(t, alice, "alice", 1, early, nil, dev)}, 1},
		{"client ignores a self-written early time", client, [][]byte{first, selfDated}, 0},
		{"client ignores a self-written early time (order)", client, [][]byte{selfDated, first}, 1},
		{"client: a rogue's back-dated witness is not a quorum", rogueTrusted, [][]byte{backDated, first}, 1},
		{"client: an untrusted back-dated witness does not count", client, [][]byte{backDated, first}, 1},
		{"client: witnesses of another account do not count", client, [][]byte{stolen, first}, 1},
		{"client: a forged witness does not count", client, [][]byte{forged, first}, 1},
		{"client: an unwitnessed claim loses", client, [][]byte{unwitnessed, laterAlice}, 1},
		{"client: the earlier-witnessed claim wins", client, [][]byte{laterAlice, earlyMallory}, 1},
		{"one trusted supernode is a quorum of one", oneSupernode, [][]byte{laterAlice, earlyMallory}, 1},
		{"client skips invalid records", client, [][]byte{[]byte("junk"), first}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.v.Select(HandleKey("alice"), tc.recs)
			if err != nil || got != tc.want {
				t.Fatalf("Select = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestWitnessVerify(t *testing.T) {
	k, id := supernodeKey(t)
	alice := newAccount(t)
	pub := alice.Public().(ed25519.PublicKey)
	good := witness(t, k, alice, "alice", t0)
	tamper := func(f func(*Witness)) Witness {
		w := good
		w.Sig = append([]byte(nil), good.Sig...)
		f(&w)
		return w
	}
	cases := []struct {
		name    string
		w       Witness
		handle  string
		account []byte
		ok      bool
	}{
		{"good", good, "alice", pub, true},
		{"other handle", good, "alicia", pub, false},
		{"other account", good, "alice", newAccount(t).Public().(ed25519.PublicKey), false},
		{"earlier time", tamper(func(w *Witness) { w.Seen-- }), "alice", pub, false},
		{"other signer named", tamper(func(w *Witness) { _, o := supernodeKey(t); w.By = o.String() }), "alice", pub, false},
		{"bad signer", tamper(func(w *Witness) { w.By = "nobody" }), "alice", pub, false},
		{"no signature", tamper(func(w *Witness) { w.Sig = nil }), "alice", pub, false},
		{"flipped signature", tamper(func(w *Witness) { w.Sig[0] ^= 1 }), "alice", pub, false},
		{"zero time", tamper(func(w *Witness) { w.Seen = 0 }), "alice", pub, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			by, err := tc.w.Verify(tc.handle, tc.account)
			if tc.ok != (err == nil) {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && by != id {
				t.Fatalf("signer %s, want %s", by, id)
			}
			if !tc.ok && !errors.Is(err, ErrBadWitness) {
				t.Fatalf("error %v is not ErrBadWitness", err)
			}
		})
	}
}

func TestMergeWitnesses(t *testing.T) {
	k1, s1 := supernodeKey(t)
	k2, s2 := supernodeKey(t)
	alice := newAccount(t)
	pub := alice.Public().(ed25519.PublicKey)
	old1 := witness(t, k1, alice, "alice", t0)
	new1 := witness(t, k1, alice, "alice", t0.Add(time.Hour)) // after the supernode forgot
	w2 := witness(t, k2, alice, "alice", t0.Add(time.Minute))
	bad := witness(t, k2, newAccount(t), "alice", t0.Add(-time.Hour))

	got, changed := MergeWitnesses([]Witness{old1}, []Witness{new1, w2, bad}, "alice", pub, []peer.ID{s2})
	if !changed || len(got) != 2 {
		t.Fatalf("merged %d witnesses (changed %v), want 2", len(got), changed)
	}
	if got[0].By != s2.String() || got[1].By != s1.String() || got[1].Seen != old1.Seen {
		t.Fatalf("merged %+v: want the preferred supernode first and the earliest of each", got)
	}
	if _, changed := MergeWitnesses(got, []Witness{new1}, "alice", pub, []peer.ID{s2}); changed {
		t.Fatal("a later witness of a known supernode changed the set")
	}
	var many []Witness
	for i := 0; i < MaxWitnesses+3; i++ {
		k, _ := supernodeKey(t)
		many = append(many, witness(t, k, alice, "alice", t0.Add(time.Duration(i)*time.Second)))
	}
	if got, _ := MergeWitnesses(nil, many, "alice", pub, nil); len(got) != MaxWitnesses || got[0].Seen != many[0].Seen {
		t.Fatalf("kept %d witnesses, want the %d earliest", len(got), MaxWitnesses)
	}
}

func TestFingerprint(t *testing.T) {
	a := newAccount(t).Public().(ed25519.PublicKey)
	fp := Fingerprint(a)
	if len(fp) != 35 || strings.Count(fp, " ") != 5 {
		t.Fatalf("fingerprint %q is not six groups of five digits", fp)
	}
	if fp != Fingerprint(a) {
		t.Fatal("fingerprint not deterministic")
	}
	if fp == Fingerprint(newAccount(t).Public().(ed25519.PublicKey)) {
		t.Fatal("two accounts share a fingerprint")
	}
}

func FuzzHandleValidate(f *testing.F) {
	acct := newAccount(f)
	good := signed(f, acct, "alice", 1, t0.Add(-time.Hour), newDevice(f))
	f.Add("alice", good)
	k, _ := supernodeKey(f)
	f.Add("alice", witnessed(f, acct, "alice", 2, t0.Add(-time.Hour), []Witness{witness(f, k, acct, "alice", t0.Add(-time.Hour))}, newDevice(f)))
	f.Add("alice", []byte(`{"v":1}`))
	f.Add("bob", []byte(`{"v":1,"handle":"bob","account":"","devices":[]}`))
	v := HandleValidator{Now: func() time.Time { return t0 }}
	f.Fuzz(func(t *testing.T, handle string, val []byte) {
		if err := v.Validate(HandleKey(handle), val); err != nil {
			return
		}
		r, err := ParseHandleRecord(val)
		if err != nil {
			t.Fatalf("Validate accepted what ParseHandleRecord refuses: %v", err)
		}
		if r.Handle != handle || !ed25519.Verify(ed25519.PublicKey(r.Account), mustSigned(t, r), r.Sig) {
			t.Fatal("accepted a record that is not signed for this handle")
		}
		if _, err := v.Select(HandleKey(handle), [][]byte{val, val}); err != nil {
			t.Fatalf("Select on a valid record: %v", err)
		}
	})
}

func mustSigned(t *testing.T, r *HandleRecord) []byte {
	b, err := r.signedBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParseWitness(f *testing.F) {
	k, _ := supernodeKey(f)
	alice := newAccount(f)
	pub := alice.Public().(ed25519.PublicKey)
	good, _ := json.Marshal(witness(f, k, alice, "alice", t0))
	f.Add(good)
	f.Add([]byte(`{"by":"","seen":1,"sig":""}`))
	f.Add([]byte(`{"by":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","seen":-1,"sig":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := ParseWitness(b, "alice", pub)
		if err != nil {
			if !errors.Is(err, ErrBadWitness) {
				t.Fatalf("error %v is not ErrBadWitness", err)
			}
			return
		}
		if _, err := w.Verify("alice", pub); err != nil {
			t.Fatalf("parsed a witness that does not verify: %v", err)
		}
		if _, err := w.Verify("alicia", pub); err == nil {
			t.Fatal("a witness of alice verifies for alicia")
		}
	})
}
