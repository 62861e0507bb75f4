package nodetest

import (
	"fmt"
	"net"
	"testing"
)

// TestFixedPortOutsideEphemeralRange: the port is free for TCP and UDP and
// lies below the range the kernel hands out for port 0 and for outgoing
// connections, which a listener on port 0 shows.
func TestFixedPortOutsideEphemeralRange(t *testing.T) {
	l0, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l0.Close()
	ephemeral := l0.Addr().(*net.TCPAddr).Port
	for i := 0; i < 20; i++ {
		port := FixedPort(t, "127.0.0.1")
		if port < firstFixedPort || port >= ephemeralLow() || port >= ephemeral {
			t.Fatalf("FixedPort = %d: want %d ≤ port < %d (the ephemeral range's first port)", port, firstFixedPort, ephemeralLow())
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FixedPort = %d, not free for TCP: %v", port, err)
		}
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("FixedPort = %d, not free for UDP: %v", port, err)
		}
		l.Close()
		u.Close()
	}
}
