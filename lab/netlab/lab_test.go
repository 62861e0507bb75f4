package netlab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
)

// Waits in these tests. A packet that should arrive is resent every
// resendEvery until deliverWait; one that should not is given blockedWait
// (three sends) to show up.
const (
	resendEvery = 150 * time.Millisecond
	deliverWait = 3 * time.Second
	blockedWait = 600 * time.Millisecond
	setupWait   = 30 * time.Second
)

func needLab(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newLab builds a lab that is closed, and checked closed, when t ends.
func newLab(t *testing.T) *Lab {
	t.Helper()
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	l, err := New(ctx, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left, _ := namespaces(l.Prefix()); len(left) > 0 {
			t.Errorf("after Close, namespaces remain: %v", left)
		}
	})
	return l
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// listenUDP opens a UDP socket on any port inside h's namespace.
func listenUDP(t *testing.T, h *Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	})
	if err != nil {
		t.Fatalf("listen UDP on %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// endpoint is h's address with the port c is bound to.
func endpoint(h *Host, c *net.UDPConn) netip.AddrPort {
	return netip.AddrPortFrom(h.IP, c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
}

// deliver sends a fresh token from "from" to "to" every resendEvery until
// "at" receives it or wait passes, and returns the source address "at"
// saw. Datagrams with other tokens (late copies of earlier probes) are
// skipped.
func deliver(t *testing.T, from *net.UDPConn, to netip.AddrPort, at *net.UDPConn, wait time.Duration) (netip.AddrPort, bool) {
	t.Helper()
	tok := make([]byte, 8)
	rand.Read(tok)
	token := []byte(hex.EncodeToString(tok))
	buf := make([]byte, 1500)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if _, err := from.WriteToUDPAddrPort(token, to); err != nil {
			t.Logf("send to %s: %v", to, err)
		}
		next := time.Now().Add(resendEvery)
		if next.After(deadline) {
			next = deadline
		}
		at.SetReadDeadline(next)
		for {
			n, src, err := at.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // deadline: send again
			}
			if bytes.Equal(buf[:n], token) {
				return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), true
			}
		}
	}
	return netip.AddrPort{}, false
}

// mustDeliver is deliver that fails t when nothing arrives.
func mustDeliver(t *testing.T, what string, from *net.UDPConn, to netip.AddrPort, at *net.UDPConn) netip.AddrPort {
	t.Helper()
	src, ok := deliver(t, from, to, at, deliverWait)
	if !ok {
		t.Fatalf("%s: nothing arrived from %s to %s within %v", what, from.LocalAddr(), to, deliverWait)
	}
	return src
}

// tcpServer accepts on port of h and writes each caller's address back.
func tcpServer(t *testing.T, h *Host, port int) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen TCP %d on %s: %v", port, h.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(deliverWait))
			fmt.Fprintln(c, c.RemoteAddr())
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return netip.AddrPortFrom(h.IP, uint16(port))
}

// dialTCP connects from h to addr within timeout and returns the address
// the server saw.
func dialTCP(h *Host, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp4", addr.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestNATBehaviour builds one client per NAT type and checks, with UDP
// probes between Go sockets in the namespaces, the mapping (RFC 4787
// section 4.1) and filtering (section 5) each type promises.
func TestNATBehaviour(t *testing.T) {
	nodetest.CheckLeaks(t)
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	a := must[*Host](t)(l.AddPublicHost(ctx, "stun-a"))
	b := must[*Host](t)(l.AddPublicHost(ctx, "stun-b"))
	tcpA := map[int]netip.AddrPort{}
	for _, port := range []int{80, 443, 8080} {
		tcpA[port] = tcpServer(t, a, port)
	}

	tests := []struct {
		nat NATType
		// eim: one mapping for every destination (else one per destination).
		eim bool
		// otherPort, otherHost: after the client sent to A:1, may A:2, and
		// B:1, reach the client's mapping?
		otherPort, otherHost bool
	}{
		{Public, true, true, true},
		{FullCone, true, true, true},
		{Restricted, true, true, false},
		{PortRestricted, true, false, false},
		{Symmetric, false, false, false},
	}
	clients := map[NATType]*Host{}
	for _, tt := range tests {
		clients[tt.nat] = must[*Host](t)(l.AddNATHost(ctx, "c-"+string(tt.nat), tt.nat))
	}
	blocked := must[*Host](t)(l.AddNATHost(ctx, "c-udp-blocked", UDPBlocked))

	for _, tt := range tests {
		t.Run(string(tt.nat), func(t *testing.T) {
			t.Parallel()
			c := clients[tt.nat]
			a1, a2, b1, b2 := listenUDP(t, a), listenUDP(t, a), listenUDP(t, b), listenUDP(t, b)
			A1, A2, B1, B2 := endpoint(a, a1), endpoint(a, a2), endpoint(b, b1), endpoint(b, b2)

			t.Run("mapping", func(t *testing.T) {
				s := listenUDP(t, c)
				viaA1 := mustDeliver(t, "client to A:1", s, A1, a1)
				viaA2 := mustDeliver(t, "client to A:2", s, A2, a2)
				viaB2 := mustDeliver(t, "client to B:2", s, B2, b2)
				t.Logf("client %s mapped to %s (A:1), %s (A:2), %s (B:2)", endpoint(c, s), viaA1, viaA2, viaB2)
				if viaA1.Addr() != c.PublicIP {
					t.Errorf("A saw address %s, want the public address %s", viaA1.Addr(), c.PublicIP)
				}
				if tt.nat == Public && viaA1 != endpoint(c, s) {
					t.Errorf("public host seen as %s, want its own %s", viaA1, endpoint(c, s))
				}
				if same := viaA1 == viaA2 && viaA1 == viaB2; same != tt.eim {
					t.Errorf("one mapping for every destination = %v, want %v", same, tt.eim)
				}
				if !tt.eim && (viaA1 == viaA2 || viaA1 == viaB2 || viaA2 == viaB2) {
					t.Errorf("symmetric NAT reused a mapping across destinations")
				}
			})

			t.Run("filtering other port", func(t *testing.T) {
				s := listenUDP(t, c)
				m := mustDeliver(t, "client to A:1", s, A1, a1)
				if _, got := deliver(t, a2, m, s, waitFor(tt.otherPort)); got != tt.otherPort {
					t.Errorf("A:2 reached mapping %s: %v, want %v", m, got, tt.otherPort)
				}
				mustDeliver(t, "A:1 answering", a1, m, s)
			})

			t.Run("filtering other host and punching", func(t *testing.T) {
				s := listenUDP(t, c)
				m := mustDeliver(t, "client to A:1", s, A1, a1)
				if _, got := deliver(t, b1, m, s, waitFor(tt.otherHost)); got != tt.otherHost {
					t.Errorf("B:1 reached mapping %s: %v, want %v", m, got, tt.otherHost)
				}
				// B's unsolicited packets must not have spoiled the mapping:
				// the client now punches towards B, and B answers.
				viaB := mustDeliver(t, "client punching to B:1", s, B1, b1)
				if tt.eim && viaB != m {
					t.Errorf("after B's unsolicited packets the mapping moved from %s to %s", m, viaB)
				}
				mustDeliver(t, "B:1 answering the punch", b1, viaB, s)
			})

			t.Run("tcp", func(t *testing.T) {
				seen, err := dialTCP(c, tcpA[8080], deliverWait)
				if err != nil {
					t.Fatalf("TCP to %s: %v", tcpA[8080], err)
				}
				if ap, err := netip.ParseAddrPort(seen); err != nil || ap.Addr() != c.PublicIP {
					t.Errorf("TCP server saw %q, want an address of %s", seen, c.PublicIP)
				}
			})
		})
	}

	t.Run(string(UDPBlocked), func(t *testing.T) {
		t.Parallel()
		c := blocked
		a1 := listenUDP(t, a)
		s := listenUDP(t, c)
		if src, ok := deliver(t, s, endpoint(a, a1), a1, blockedWait); ok {
			t.Errorf("UDP left a udp-blocked NAT (A saw %s)", src)
		}
		for _, port := range []int{443, 80} {
			seen, err := dialTCP(c, tcpA[port], deliverWait)
			if err != nil {
				t.Fatalf("TCP to %s through udp-blocked: %v", tcpA[port], err)
			}
			if ap, err := netip.ParseAddrPort(seen); err != nil || ap.Addr() != c.PublicIP {
				t.Errorf("TCP server saw %q, want an address of %s", seen, c.PublicIP)
			}
		}
		if _, err := dialTCP(c, tcpA[8080], blockedWait); err == nil {
			t.Errorf("TCP to %s left a udp-blocked NAT", tcpA[8080])
		}
	})
}

// waitFor is how long a probe waits: a packet that should arrive gets
// resends up to deliverWait, one that should not gets blockedWait.
func waitFor(arrives bool) time.Duration {
	if arrives {
		return deliverWait
	}
	return blockedWait
}

func TestFlushNAT(t *testing.T) {
	nodetest.CheckLeaks(t)
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	a := must[*Host](t)(l.AddPublicHost(ctx, "a"))
	b := must[*Host](t)(l.AddPublicHost(ctx, "b"))
	for _, nat := range []NATType{FullCone, Restricted, PortRestricted, Symmetric} {
		c := must[*Host](t)(l.AddNATHost(ctx, "c-"+string(nat), nat))
		t.Run(string(nat), func(t *testing.T) {
			a1, b1, s := listenUDP(t, a), listenUDP(t, b), listenUDP(t, c)
			m := mustDeliver(t, "client to A", s, endpoint(a, a1), a1)
			mustDeliver(t, "A answering", a1, m, s)
			if err := l.FlushNAT(ctx, c); err != nil {
				t.Fatal(err)
			}
			if _, ok := deliver(t, a1, m, s, blockedWait); ok {
				t.Errorf("A still reaches %s after FlushNAT", m)
			}
			if _, ok := deliver(t, b1, m, s, blockedWait); ok {
				t.Errorf("B reaches %s after FlushNAT", m)
			}
			m2 := mustDeliver(t, "client to A after flush", s, endpoint(a, a1), a1)
			mustDeliver(t, "A answering after flush", a1, m2, s)
			t.Logf("mapping before flush %s, after %s", m, m2)
		})
	}
	pub := must[*Host](t)(l.AddNATHost(ctx, "pub", Public))
	if err := l.FlushNAT(ctx, pub); err == nil {
		t.Error("FlushNAT of a public host succeeded")
	}
}

// TestHostBehind puts two hosts behind one router, bound to the same
// port: they share the public address, reach each other on the LAN, and
// each keeps its own mapping. Cone routers never give two LAN endpoints
// one WAN port (inbound would be ambiguous); Linux masquerade may, which
// is harmless for conntrack filtering.
func TestHostBehind(t *testing.T) {
	nodetest.CheckLeaks(t)
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	a := must[*Host](t)(l.AddPublicHost(ctx, "a"))
	b := must[*Host](t)(l.AddPublicHost(ctx, "b"))
	if _, err := l.AddHostBehind(ctx, "tablet", a); err == nil {
		t.Error("AddHostBehind a public host succeeded")
	}
	for _, nat := range []NATType{FullCone, Restricted, PortRestricted, Symmetric} {
		laptop := must[*Host](t)(l.AddNATHost(ctx, "laptop-"+string(nat), nat))
		phone := must[*Host](t)(l.AddHostBehind(ctx, "phone-"+string(nat), laptop))
		t.Run(string(nat), func(t *testing.T) {
			if phone.PublicIP != laptop.PublicIP || phone.Router != laptop.Router || phone.IP == laptop.IP || phone.NAT != nat {
				t.Fatalf("phone %v and laptop %v do not share a router", phone, laptop)
			}
			a1, a2, b1, b2 := listenUDP(t, a), listenUDP(t, a), listenUDP(t, b), listenUDP(t, b)
			sl := listenUDP(t, laptop)
			port := sl.LocalAddr().(*net.UDPAddr).Port
			var sp *net.UDPConn
			if err := phone.Do(func() (err error) {
				sp, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer sp.Close()

			mL := mustDeliver(t, "laptop to A:1", sl, endpoint(a, a1), a1)
			mP := mustDeliver(t, "phone to B:1", sp, endpoint(b, b1), b1)
			mP2 := mustDeliver(t, "phone to A:2", sp, endpoint(a, a2), a2)
			t.Logf("both on port %d: laptop mapped to %s, phone to %s (B) and %s (A)", port, mL, mP, mP2)
			if mP.Addr() != laptop.PublicIP {
				t.Errorf("phone seen as %s, want %s", mP, laptop.PublicIP)
			}
			if (mP == mP2) != nat.endpointIndependent() {
				t.Errorf("phone's mapping same for A and B = %v, want %v", mP == mP2, nat.endpointIndependent())
			}
			if (nat == FullCone || nat == Restricted) && mP == mL {
				t.Errorf("laptop and phone share mapping %s", mL)
			}
			if nat == FullCone {
				mustDeliver(t, "B:2 to the laptop's mapping", b2, mL, sl)
				mustDeliver(t, "B:2 to the phone's mapping", b2, mP, sp)
			}
			mustDeliver(t, "phone to laptop on the LAN", sp, endpoint(laptop, sl), sl)

			if nat == FullCone || nat == Restricted {
				// A cone mapping lives in the router's maps, not only in
				// conntrack: with every conntrack entry gone, the phone keeps
				// its (randomised) port, where plain masquerade would now
				// hand it the laptop's.
				if err := doIn(phone.Router, flushConntrack); err != nil {
					t.Fatal(err)
				}
				if m := mustDeliver(t, "phone to B:1 after conntrack flush", sp, endpoint(b, b1), b1); m != mP {
					t.Errorf("after conntrack flush the phone maps to %s, want %s", m, mP)
				}
			}
		})
	}
}

func TestSetLinkUp(t *testing.T) {
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	a := must[*Host](t)(l.AddPublicHost(ctx, "a"))
	c := must[*Host](t)(l.AddNATHost(ctx, "c", FullCone))
	a1, s := listenUDP(t, a), listenUDP(t, c)
	mustDeliver(t, "before", s, endpoint(a, a1), a1)
	if err := l.SetLinkUp(ctx, c, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := deliver(t, s, endpoint(a, a1), a1, blockedWait); ok {
		t.Error("a host with its link down still sends")
	}
	if err := l.SetLinkUp(ctx, c, true); err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, "after the link is back", s, endpoint(a, a1), a1)
}

// TestCommand runs a program inside a host and checks what it sees.
func TestCommand(t *testing.T) {
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	c := must[*Host](t)(l.AddNATHost(ctx, "c", Symmetric))
	out, err := c.Command(ctx, "ip", "-o", "-4", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), c.IP.String()+"/29") || strings.Count(string(out), "inet ") != 2 {
		t.Errorf("client sees addresses\n%s\nwant lo and %s/29 only", out, c.IP)
	}
	// Forwarding is on in the router only.
	for ns, want := range map[string]string{c.Namespace: "0", c.Router: "1", l.Internet(): "0"} {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("ip_forward in %s = %q (%v), want %s", ns, out, err, want)
		}
	}
}

// TestClose checks that Close removes every namespace and is idempotent,
// and that nothing is ever made in the default namespace.
func TestClose(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	l, err := New(ctx, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	must[*Host](t)(l.AddPublicHost(ctx, "sn"))
	c := must[*Host](t)(l.AddNATHost(ctx, "alice", Restricted))
	must[*Host](t)(l.AddHostBehind(ctx, "alice-phone", c))
	must[*Host](t)(l.AddNATHost(ctx, "bob", Public))
	if _, err := l.AddPublicHost(ctx, "sn"); err == nil {
		t.Error("a second host named sn was accepted")
	}
	nss, err := namespaces(l.Prefix())
	if err != nil || len(nss) != 6 {
		t.Errorf("namespaces = %v, %v; want 6 (internet, router, 4 hosts)", nss, err)
	}
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").CombinedOutput()
	if err != nil || strings.Contains(string(out), l.Prefix()) {
		t.Errorf("default namespace holds lab links (%v):\n%s", err, out)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left, err := namespaces(l.Prefix()); err != nil || len(left) > 0 {
		t.Errorf("after Close: %v, %v", left, err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.AddPublicHost(ctx, "late"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddPublicHost after Close = %v, want ErrClosed", err)
	}
}

// TestSweep simulates crashed runs: a lab left open is removed by Sweep;
// a lab whose owner died is removed by SweepStale and by New with the same
// prefix; a live lab is left alone by both.
func TestSweep(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	prefix := "plt" + randomHex(2)
	build := func() *Lab {
		t.Helper()
		l, err := New(ctx, Options{Prefix: prefix, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		must[*Host](t)(l.AddPublicHost(ctx, "sn"))
		must[*Host](t)(l.AddNATHost(ctx, "alice", Symmetric))
		return l
	}
	count := func() int {
		nss, err := namespaces(prefix)
		if err != nil {
			t.Fatal(err)
		}
		return len(nss)
	}
	t.Cleanup(func() { Sweep(prefix) })

	crashed := build() // never closed, as if the process had been killed
	if _, err := New(ctx, Options{Prefix: prefix}); !errors.Is(err, ErrPrefixInUse) {
		t.Fatalf("New on a live lab's prefix = %v, want ErrPrefixInUse", err)
	}
	if err := SweepStale(prefix); err != nil || count() != 4 {
		t.Fatalf("SweepStale removed a live lab (%v); %d namespaces left", err, count())
	}
	if err := Sweep(prefix); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d namespaces left after Sweep", n)
	}

	// A run whose process died: give the lab a dead owner.
	second := build()
	cmd := exec.CommandContext(ctx, "true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	marker := ownerMarker(cmd.Process.Pid, 1, "dead")
	if out, err := exec.CommandContext(ctx, "ip", "-n", inetNamespace(prefix), "link", "set", "dev", bridgeName(prefix), "alias", marker).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	third := build() // New removes the dead run's leftovers first
	if n := count(); n != 4 {
		t.Fatalf("%d namespaces after rebuilding over a dead run, want 4", n)
	}
	// The stale Lab values must not tear down the lab that replaced them.
	if err := errors.Join(crashed.Close(), second.Close()); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 4 {
		t.Fatalf("closing stale labs left %d of the live lab's 4 namespaces", n)
	}
	if err := third.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d namespaces left after Close", n)
	}
}

// crashEnv makes the test binary build a lab with the prefix it names and
// wait to be killed (see TestCrashedRun).
const crashEnv = "NETLAB_TEST_CRASH_PREFIX"

// TestCrashHelper is the child of TestCrashedRun; it does nothing in a
// normal run.
func TestCrashHelper(t *testing.T) {
	prefix := os.Getenv(crashEnv)
	if prefix == "" {
		t.Skip("helper process for TestCrashedRun")
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	l, err := New(ctx, Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	must[*Host](t)(l.AddPublicHost(ctx, "sn"))
	must[*Host](t)(l.AddNATHost(ctx, "alice", FullCone))
	fmt.Println("ready")
	<-ctx.Done() // killed long before
}

// TestCrashedRun kills a process that built a lab, then checks that a new
// run with the same prefix and SweepStale both clean up after it.
func TestCrashedRun(t *testing.T) {
	needLab(t)
	prefix := "plk" + randomHex(2)
	t.Cleanup(func() { Sweep(prefix) })
	count := func() int {
		nss, err := namespaces(prefix)
		if err != nil {
			t.Fatal(err)
		}
		return len(nss)
	}
	crash := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), setupWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+prefix)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n') // ctx bounds the wait
		if strings.TrimSpace(line) != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper did not build its lab: %q, %v", line, err)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if n := count(); n != 4 {
			t.Fatalf("killed run left %d namespaces, want 4", n)
		}
	}

	crash()
	if err := SweepStale(prefix); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("SweepStale left %d namespaces of a dead run", n)
	}

	crash()
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	l, err := New(ctx, Options{Prefix: prefix, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New after a killed run: %v", err)
	}
	a := must[*Host](t)(l.AddPublicHost(ctx, "sn"))
	c := must[*Host](t)(l.AddNATHost(ctx, "alice", FullCone))
	a1, s := listenUDP(t, a), listenUDP(t, c)
	mustDeliver(t, "alice to sn in the new run", s, endpoint(a, a1), a1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d namespaces left after Close", n)
	}
}
