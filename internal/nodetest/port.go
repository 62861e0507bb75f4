package nodetest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FixedPort returns a port free on ip for both TCP and UDP, for a server a
// test stops and starts again at the same address. The port lies below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range), so nothing the
// test starts while the server is down — a listener on port 0, an outgoing
// connection — can be handed that port and keep the server from coming
// back. A port taken from a listener on port 0 could be: the kernel hands
// it out again as soon as it is closed.
func FixedPort(t testing.TB, ip string) int {
	t.Helper()
	low := ephemeralLow()
	for i := 0; i < 100; i++ {
		port := firstFixedPort + rand.IntN(low-firstFixedPort)
		if portFree(ip, port) {
			return port
		}
	}
	t.Fatalf("no free port on %s in %d-%d after 100 tries", ip, firstFixedPort, low-1)
	return 0
}

// firstFixedPort is the lowest port FixedPort gives: above the well-known
// ports and most registered services.
const firstFixedPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range, or
// Linux's default first port where it cannot be read or leaves fewer than
// 1,000 ports below it from firstFixedPort (FixedPort's ports may then be
// ephemeral ones: the old way, no worse).
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low < firstFixedPort+1000 {
		return linuxDefault
	}
	return low
}

func portFree(ip string, port int) bool {
	addr := net.JoinHostPort(ip, fmt.Sprint(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
