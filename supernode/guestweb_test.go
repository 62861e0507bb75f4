package supernode

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/internal/turnrest"
)

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
