package supernode

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/internal/turnrest"
)

func TestDecodeGuestFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"ringing", `{"t":"ringing","call":"0a","seq":1}`, true},
		{"accept", `{"t":"accept","call":"0a","seq":2,"ack":1,"sdp":"v=0"}`, true},
		{"accept without SDP", `{"t":"accept","call":"0a","seq":2}`, false},
		{"candidate", `{"t":"candidate","call":"0a","seq":3,"cand":"{}"}`, true},
		{"ping", `{"t":"ping","call":"0a","ack":3}`, true},
		{"an invite from the callee", `{"t":"invite","call":"0a","seq":1,"guest":true,"sdp":"v=0"}`, false},
		{"a restart from the callee", `{"t":"restart","call":"0a","seq":4,"restart":1,"sdp":"v=0"}`, false},
		{"SDP too long", `{"t":"accept","call":"0a","seq":2,"sdp":"` + strings.Repeat("a", maxGuestSDP+1) + `"}`, false},
		{"call id too long", `{"t":"ringing","call":"` + strings.Repeat("a", 65) + `","seq":1}`, false},
		{"not JSON", `{"t":`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeGuestFrame([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("decodeGuestFrame(%.60s) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, errGuestFrame) {
				t.Fatalf("error %v is not errGuestFrame", err)
			}
		})
	}
}

func FuzzDecodeGuestFrame(f *testing.F) {
	f.Add([]byte(`{"t":"accept","call":"0a","seq":2,"ack":1,"sdp":"v=0"}`))
	f.Add([]byte(`{"t":"candidate","call":"0a","seq":3,"cand":"{}"}`))
	f.Add([]byte(`{"t":"hangup","call":"0a","seq":3,"reason":"lost"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeGuestFrame(b)
		if err != nil {
			return
		}
		if len(b) > maxGuestFrame || len(fr.SDP) > maxGuestSDP || len(fr.Candidate) > maxGuestCandidate || len(fr.Call) > 64 {
			t.Fatalf("accepted an out-of-bounds frame %+v", fr)
		}
	})
}

// TestGuestICE: a guest's page gets this supernode's STUN and a short TURN
// credential the TURN server accepts, named by the address the guest
// reached; past the TURN ration, STUN only.
func TestGuestICE(t *testing.T) {
	sn, err := New(context.Background(), Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger: slog.New(slog.DiscardHandler), STUNAddr: "127.0.0.1:0", Web: "127.0.0.1:0",
		TURN: &turnrelay.Config{UDPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	client, local := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("127.0.0.1")
	ice := sn.guestICE(client, local, true)
	if len(ice) != 2 || !strings.HasPrefix(ice[0].URLs[0], "stun:127.0.0.1:") || !strings.HasPrefix(ice[1].URLs[0], "turn:127.0.0.1:") {
		t.Fatalf("ICE servers %+v, want STUN and TURN on 127.0.0.1", ice)
	}
	cc := sn.TURN().CredentialConfig()
	user := ice[1].Username
	id, err := turnrest.Verify(cc.Secret, user, ice[1].Credential.(string), time.Now(), guestTURNTTL+time.Minute)
	if err != nil || id != "guest-192.0.2.7" {
		t.Fatalf("the TURN credential %q: id %q, %v", user, id, err)
	}
	if exp, _, _ := turnrest.ParseUsername(user); exp.After(time.Now().Add(guestTURNTTL + time.Second)) {
		t.Fatalf("a guest's credential expires at %v, more than %v from now", exp, guestTURNTTL)
	}
	if ice := sn.guestICE(client, local, false); len(ice) != 1 {
		t.Fatalf("past the TURN ration: %+v, want STUN only", ice)
	}
}
