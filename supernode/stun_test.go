package supernode

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func TestSTUNBinding(t *testing.T) {
	s, err := ListenSTUN("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Garbage first: it must be ignored, and the server must keep answering.
	c.WriteTo([]byte("not stun at all"), s.Addr())
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	c.WriteTo(req.Raw, s.Addr())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no STUN answer: %v", err)
	}
	resp := &stun.Message{Raw: buf[:n]}
	if err := resp.Decode(); err != nil {
		t.Fatal(err)
	}
	if resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
		t.Fatalf("response %v for transaction %x", resp.Type, resp.TransactionID)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(resp); err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().(*net.UDPAddr)
	if !xor.IP.Equal(local.IP) || xor.Port != local.Port {
		t.Fatalf("mapped %s:%d, want %s", xor.IP, xor.Port, local)
	}
}

func TestSTUNRefusesOthers(t *testing.T) {
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	for name, b := range map[string][]byte{
		"empty":            nil,
		"garbage":          []byte("GET / HTTP/1.1\r\n\r\n"),
		"binding response": stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw,
		"allocate":         stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw,
		"oversized":        make([]byte, maxSTUNPacket+1),
	} {
		if _, err := stunResponse(b, from); err == nil {
			t.Errorf("%s: answered", name)
		}
	}
}

func FuzzSTUNResponse(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := stunResponse(b, from)
		if err != nil {
			return
		}
		m := &stun.Message{Raw: resp}
		if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
			t.Fatalf("answered with a malformed response: %v", err)
		}
	})
}
