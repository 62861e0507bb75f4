package turnrelay

import (
	"github.com/parley-net/parley/internal/nodetest"

	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// fastSetup: a raw client with an allocation and a channel bound to a UDP
// peer on 127.0.0.1 (the relay's own address: the test-only opt-in).
type fastSetup struct {
	srv   *Server
	c     *rawClient
	peer  *net.UDPConn
	relay netip.AddrPort
	ch    uint16
}

func newFastSetup(t *testing.T, mod func(*Config)) *fastSetup {
	t.Helper()
	srv := startServer(t, func(c *Config) {
		c.AllowCIDRs = allowLoop
		c.AllowOwnAddrs = true
		if mod != nil {
			mod(c)
		}
	})
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	cred := issue(t, "fast")
	addr := srv.UDPAddr()
	if addr.IP.IsUnspecified() { // a wildcard listener: reach it on 127.0.0.1
		addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: addr.Port}
	}
	c := newRawClient(t, addr, cred.Username, cred.Password)
	res := c.allocate(4)
	if code := errorCode(t, res); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	f := &fastSetup{srv: srv, c: c, peer: peer, relay: relayedAddr(t, res), ch: 0x4123}
	pa := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if code := errorCode(t, c.request(stun.MethodChannelBind, channelNumber(f.ch), peerAddr{ip: pa.Addr(), port: pa.Port()})); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	return f
}

// readChannelData reads one ChannelData message at the client.
func (f *fastSetup) readChannelData(t *testing.T) (uint16, []byte, int) {
	t.Helper()
	b, _ := readWithin(t, f.c.conn, 3*time.Second)
	num, payload, ok := parseChannelData(b)
	if !ok {
		t.Fatalf("client got %d bytes that are not ChannelData: %x", len(b), b[:min(8, len(b))])
	}
	return num, payload, len(b)
}

// TestFastPathRelaysIntact: ChannelData in both directions crosses the
// relay byte for byte (sizes around the 4-byte padding, an empty payload
// and a 1400-byte one), framed on the right channel and padded as pion
// pads, and the data plane, not pion, carried it.
func TestFastPathRelaysIntact(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "0.0.0.0:0"} { // the cloud relay's default is a wildcard (dual stack)
		t.Run(listen, func(t *testing.T) {
			testFastPathRelaysIntact(t, newFastSetup(t, func(c *Config) { c.UDPAddr = listen }))
		})
	}
}

func testFastPathRelaysIntact(t *testing.T, f *fastSetup) {
	sizes := []int{0, 1, 2, 3, 4, 5, 119, 120, 160, 1400}
	for i, n := range sizes {
		msg := bytes.Repeat([]byte{byte(i + 1)}, n)
		f.c.channelData(f.ch, msg)
		got, from := readWithin(t, f.peer, 3*time.Second)
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes to peer: got %d bytes", n, len(got))
		}
		if from.(*net.UDPAddr).AddrPort() != f.relay {
			t.Fatalf("peer got it from %v, want the relayed address %v", from, f.relay)
		}
		reply := bytes.Repeat([]byte{byte(0x80 + i)}, n)
		if _, err := f.peer.WriteToUDPAddrPort(reply, f.relay); err != nil {
			t.Fatal(err)
		}
		num, payload, wire := f.readChannelData(t)
		if num != f.ch || !bytes.Equal(payload, reply) {
			t.Fatalf("%d bytes to client: channel %#x, %d bytes", n, num, len(payload))
		}
		if wire != (chanHeader+n+3)/4*4 {
			t.Fatalf("%d bytes to client: ChannelData of %d bytes, want padding to %d", n, wire, (chanHeader+n+3)/4*4)
		}
	}
	st := f.srv.Stats()
	if st.ToPeerPackets != uint64(len(sizes)) || st.ToClientPackets != uint64(len(sizes)) {
		t.Errorf("relayed to peer/client %d/%d, want %d each", st.ToPeerPackets, st.ToClientPackets, len(sizes))
	}
	if got := f.srv.dp.fastPackets.Load(); got != 2*uint64(len(sizes)) {
		t.Errorf("data plane relayed %d datagrams, want all %d", got, 2*len(sizes))
	}
}

// TestFastPathRefusesStrangers: nothing reaches the client from an
// address without a permission (127.0.0.2, while the permission is for
// 127.0.0.1), and nothing reaches the peer from ChannelData on a channel
// that is not bound, or on the bound channel number but from another
// client address (the channel belongs to the allocation's 5-tuple).
func TestFastPathRefusesStrangers(t *testing.T) {
	f := newFastSetup(t, nil)
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	defer stranger.Close()
	if _, err := stranger.WriteToUDPAddrPort([]byte("let me in"), f.relay); err != nil {
		t.Fatal(err)
	}
	f.c.channelData(0x4124, []byte("unbound channel"))
	other := newRawClient(t, f.c.server, "", "")
	other.channelData(f.ch, []byte("someone else's channel"))
	expectSilence(t, f.peer, 500*time.Millisecond)
	expectSilence(t, f.c.conn, 100*time.Millisecond)
	// The control: the bound channel from the right client still works.
	f.c.channelData(f.ch, []byte("hello"))
	if got, _ := readWithin(t, f.peer, 3*time.Second); string(got) != "hello" {
		t.Fatalf("peer got %q", got)
	}
	// The counter is bumped after sendto returns, which may be after the
	// peer has the datagram.
	nodetest.Eventually(t, 2*time.Second, "the to-peer counter", func() bool { return f.srv.Stats().ToPeerPackets >= 1 })
	if st := f.srv.Stats(); st.ToPeerPackets != 1 || st.ToClientPackets != 0 {
		t.Fatalf("relayed to peer/client %d/%d, want 1/0", st.ToPeerPackets, st.ToClientPackets)
	}
}

// TestFastPathKeepsOwnAddressRule: with loopback allowed but without the
// test-only opt-in, a channel bound to another allocation's relayed port
// on this host carries data (two clients of one relay), and once that
// allocation is gone the same channel toward the now-unused port is
// dropped: the own-address rule is checked per datagram, not only at
// ChannelBind. A channel to the relay's own listener never carries any.
func TestFastPathKeepsOwnAddressRule(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.AllowCIDRs = allowLoop })
	cred := issue(t, "own")
	a := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
	b := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
	resA, resB := a.allocate(4), b.allocate(4)
	if errorCode(t, resA) != 0 || errorCode(t, resB) != 0 {
		t.Fatal("allocate failed")
	}
	ra, rb := relayedAddr(t, resA), relayedAddr(t, resB)
	if code := errorCode(t, a.request(stun.MethodChannelBind, channelNumber(0x4001), peerAddr{ip: rb.Addr(), port: rb.Port()})); code != 0 {
		t.Fatalf("A binds B: %d", code)
	}
	if code := errorCode(t, b.request(stun.MethodCreatePermission, peerAddr{ip: ra.Addr(), port: ra.Port()})); code != 0 {
		t.Fatalf("B permits A: %d", code)
	}
	a.channelData(0x4001, []byte("to b"))
	got, _ := readWithin(t, b.conn, 3*time.Second) // a Data indication: B has no channel
	if !bytes.Contains(got, []byte("to b")) {
		t.Fatalf("B got %x", got)
	}
	// B's allocation ends (Refresh with lifetime 0): its port is just a
	// port of ours now.
	if code := errorCode(t, b.request(stun.MethodRefresh, lifetime0{})); code != 0 {
		t.Fatalf("Refresh 0: %d", code)
	}
	nodetest.Eventually(t, 3*time.Second, "B's allocation to end", func() bool { return srv.Stats().Allocations == 1 })
	port, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(rb))
	if err != nil {
		t.Skipf("cannot take over B's relayed port: %v", err)
	}
	defer port.Close()
	before := srv.Stats().DroppedPolicy
	a.channelData(0x4001, []byte("to a port of ours"))
	nodetest.Eventually(t, 2*time.Second, "a policy drop", func() bool { return srv.Stats().DroppedPolicy == before+1 })
	expectSilence(t, port, 200*time.Millisecond)

	self := peerAddr{ip: loopback4, port: uint16(srv.UDPAddr().Port)}
	if code := errorCode(t, a.request(stun.MethodChannelBind, channelNumber(0x4002), self)); code != 0 {
		t.Fatalf("ChannelBind to our listener (policy allows loopback): %d", code)
	}
	a.channelData(0x4002, []byte("loop"))
	nodetest.Eventually(t, 2*time.Second, "a policy drop", func() bool { return srv.Stats().DroppedPolicy == before+2 })
}

type lifetime0 struct{}

func (lifetime0) AddTo(m *stun.Message) error {
	m.Add(stun.AttrLifetime, []byte{0, 0, 0, 0})
	return nil
}

// FuzzParseChannelData: the data plane's decoder of client datagrams
// never reads past the datagram and agrees with the framing it writes.
func FuzzParseChannelData(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x01, 0xff, 0, 0, 0})
	f.Add([]byte{0x7f, 0xff, 0x00, 0x00})
	f.Add([]byte{0x40, 0x00, 0xff, 0xff, 1})
	f.Add([]byte{0x00, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		num, payload, ok := parseChannelData(b)
		if !ok {
			return
		}
		if num < 0x4000 || num > 0x7FFF || len(payload) > len(b)-chanHeader {
			t.Fatalf("accepted channel %#x with %d of %d bytes", num, len(payload), len(b))
		}
		again := appendChannelData(nil, num, payload)
		n2, p2, ok2 := parseChannelData(again)
		if !ok2 || n2 != num || !bytes.Equal(p2, payload) || len(again)%4 != 0 {
			t.Fatalf("re-framed %x does not decode to channel %#x, %x", again, num, payload)
		}
	})
}
