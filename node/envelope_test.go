package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/parley-net/parley/discovery"
)

func testIdentity(t testing.TB, handle string) *Identity {
	t.Helper()
	id, err := InitIdentity(t.TempDir(), handle, handle+"-laptop", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEnvelopeRoundTrip(t *testing.T) {
	alice, bob, mallory := testIdentity(t, "alice"), testIdentity(t, "bob"), testIdentity(t, "mallory")
	p := &Payload{Kind: kindMessage, ID: "00aa", Conv: "dm:alice:bob", Lamport: 1, SentMS: 1, Body: "the secret plan"}
	env, err := sealEnvelope(alice, p, "00aa", bob.Self())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte("secret plan")) {
		t.Fatal("plaintext visible in the envelope")
	}
	e, rec, err := parseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openEnvelope(e, rec, bob.BoxKey)
	if err != nil || got.Body != p.Body {
		t.Fatalf("open: %+v %v", got, err)
	}
	if _, err := openEnvelope(e, rec, mallory.BoxKey); !errors.Is(err, ErrBadEnvelope) {
		t.Fatalf("another device opened it: %v", err)
	}

	mutate := func(f func(*Envelope)) []byte {
		var e Envelope
		json.Unmarshal(env, &e)
		f(&e)
		b, _ := json.Marshal(&e)
		return b
	}
	cases := []struct {
		name string
		env  []byte
	}{
		{"tampered box", mutate(func(e *Envelope) { e.Box[0] ^= 1 })},
		{"other recipient", mutate(func(e *Envelope) { e.ToDevice = mallory.PeerID.String() })},
		{"claims another handle", mutate(func(e *Envelope) { e.From = "bob" })},
		{"signed by a device not in the sender's record", func() []byte {
			b, _ := sealEnvelope(mallory, p, "00aa", bob.Self())
			var e Envelope
			json.Unmarshal(b, &e)
			e.Record = alice.Record() // mallory's device claims to be alice's
			e.From = "alice"
			out, _ := json.Marshal(&e)
			return out
		}()},
		{"re-signed record swap", mutate(func(e *Envelope) { e.Record = mallory.Record() })},
		{"garbage", []byte("{")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, rec, err := parseEnvelope(tc.env)
			if err == nil {
				_, err = openEnvelope(e, rec, bob.BoxKey)
			}
			if !errors.Is(err, ErrBadEnvelope) && !errors.Is(err, discovery.ErrBadRecord) {
				t.Fatalf("accepted (%v)", err)
			}
		})
	}
}

func FuzzParseEnvelope(f *testing.F) {
	alice, bob := testIdentity(f, "alice"), testIdentity(f, "bob")
	env, _ := sealEnvelope(alice, &Payload{Kind: kindMessage, ID: "00aa", Conv: "dm:alice:bob", Lamport: 1, SentMS: 1, Body: "hi"}, "00aa", bob.Self())
	f.Add(env)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, rec, err := parseEnvelope(b)
		if err != nil {
			return
		}
		if !rec.HasDevice(mustDecode(e.FromDevice)) || rec.Handle != e.From {
			t.Fatal("accepted an envelope its record does not vouch for")
		}
		openEnvelope(e, rec, bob.BoxKey)
	})
}

func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte(`{"kind":"msg","id":"0a","conv":"dm:alice:bob","lamport":1,"sent_ms":1,"body":"hi"}`))
	f.Add([]byte(`{"kind":"receipt","receipt":{"state":"read","ids":["0a"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePayload(b)
		if err != nil {
			return
		}
		if p.Kind == kindMessage && (len(p.Body) > MaxBodyBytes || checkConv(p.Conv, p.Group) != nil) {
			t.Fatal("accepted an invalid message")
		}
	})
}
