package media

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/parley-net/parley/internal/clock"
)

// TestSilentRelayConn: a socket to a TURN server fails its writes once a
// request has gone unanswered for the timeout, not before, and not for
// data the relay owes no answer to; anything the server sends lifts it.
func TestSilentRelayConn(t *testing.T) {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	c := &silentRelayConn{PacketConn: raw, clk: clk, timeout: 1500 * time.Millisecond}
	defer c.Close()
	to := srv.LocalAddr()

	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest)).Raw
	ind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication)).Raw
	channelData := []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}
	write := func(b []byte) error { _, err := c.WriteTo(b, to); return err }

	// Data alone never starts the clock.
	for range 5 {
		if err := write(ind); err != nil {
			t.Fatal(err)
		}
		if err := write(channelData); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if err := write(req); err != nil {
		t.Fatal(err)
	}
	clk.Advance(1400 * time.Millisecond)
	if err := write(req); err != nil {
		t.Fatalf("a retransmission within the timeout failed: %v", err)
	}
	clk.Advance(100 * time.Millisecond)
	if err := write(req); !errors.Is(err, errRelaySilent) {
		t.Fatalf("a write after %v of an unanswered request: %v, want errRelaySilent", c.timeout, err)
	}
	if err := write(channelData); !errors.Is(err, errRelaySilent) {
		t.Fatalf("data to a silent relay: %v, want errRelaySilent", err)
	}

	// The server answers: the socket works again.
	if _, err := srv.WriteTo([]byte("answer"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	if err := write(req); err != nil {
		t.Fatalf("a write after the server answered: %v", err)
	}
}

func TestIsSTUNRequest(t *testing.T) {
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"allocate request", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw, true},
		{"binding request", stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, true},
		{"success response", stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw, false},
		{"error response", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse)).Raw, false},
		{"send indication", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication)).Raw, false},
		{"channel data", []byte{0x40, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
		{"short", []byte{0, 1, 0, 0}, false},
	} {
		if got := isSTUNRequest(c.b); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// FuzzIsSTUNRequest: on any datagram, isSTUNRequest never reads past it,
// and on every datagram pion's STUN decoder takes whole it agrees with
// that decoder's class, but where the first two bits are not zero: pion
// decodes those too, RFC 8489 says they are not STUN, and TURN's
// ChannelData begins with 01.
func FuzzIsSTUNRequest(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw)
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := isSTUNRequest(b)
		var m stun.Message
		if err := stun.Decode(b, &m); err != nil || b[0]&0xC0 != 0 {
			return
		}
		if want := m.Type.Class == stun.ClassRequest; got != want {
			t.Errorf("%x: isSTUNRequest %v, pion's class %v", b, got, m.Type.Class)
		}
	})
}
