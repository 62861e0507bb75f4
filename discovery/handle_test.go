package discovery

import (
	"crypto/ed25519"
	"crypto/rand"
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

func TestHandleSelect(t *testing.T) {
	alice := newAccount(t)
	mallory := newAccount(t)
	dev := newDevice(t)
	first := signed(t, alice, "alice", 1, t0.Add(-time.Hour), dev)
	update := signed(t, alice, "alice", 2, t0.Add(-time.Hour), dev, newDevice(t))
	rival := signed(t, mallory, "alice", 5, t0.Add(-2*time.Hour), newDevice(t))

	server := HandleValidator{Now: func() time.Time { return t0 }, PreferExisting: true}
	client := HandleValidator{Now: func() time.Time { return t0 }}
	cases := []struct {
		name string
		v    HandleValidator
		recs [][]byte // {incoming, stored} for the server
		want int
	}{
		{"server takes a newer seq of the same account", server, [][]byte{update, first}, 0},
		{"server keeps a newer seq over an older one", server, [][]byte{first, update}, 1},
		{"server refreshes an identical republish", server, [][]byte{first, first}, 0},
		{"server refuses a rival claim", server, [][]byte{rival, first}, 1},
		{"client prefers the earliest claim", client, [][]byte{first, rival}, 1},
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
