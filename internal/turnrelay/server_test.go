package turnrelay

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/turnrest"
)

// TestRelayBetweenTwoClients: two pion/turn clients allocate on our relay
// (over UDP, TCP and TLS), permit each other's relayed address and exchange
// datagrams both ways through two allocations; the relayed address is the
// configured relay IP and port range, and the counters and Prometheus
// metrics account for every allocation, packet and byte.
func TestRelayBetweenTwoClients(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tlsConf := selfSignedTLS(t)
			srv := startServer(t, func(c *Config) {
				c.TLSAddr, c.TLSConfig = "127.0.0.1:0", tlsConf
				c.AllowCIDRs = allowLoop
				c.MinPort, c.MaxPort = 41000, 41999
				c.Registerer = reg
			})
			addr := map[string]string{"udp": srv.UDPAddr().String(), "tcp": srv.TCPAddr().String(), "tls": srv.TLSAddr().String()}[transport]
			ca, cb := issue(t, "alice-device"), issue(t, "bob-device")
			clientA := turnClient(t, transport, addr, ca.Username, ca.Password)
			clientB := turnClient(t, transport, addr, cb.Username, cb.Password)
			a, b := allocate(t, clientA), allocate(t, clientB)
			// TURN filters like an address-restricted NAT: each side must
			// permit the other's relayed address (RFC 8656 §9).
			if err := clientA.CreatePermission(b.LocalAddr()); err != nil {
				t.Fatalf("A permits B: %v", err)
			}
			if err := clientB.CreatePermission(a.LocalAddr()); err != nil {
				t.Fatalf("B permits A: %v", err)
			}
			for _, rc := range []net.PacketConn{a, b} {
				ap := rc.LocalAddr().(*net.UDPAddr).AddrPort()
				if ap.Addr().Unmap() != loopback4 || ap.Port() < 41000 || ap.Port() > 41999 {
					t.Fatalf("relayed address %v is not 127.0.0.1:41000-41999", ap)
				}
			}
			if got := srv.Stats().Allocations; got != 2 {
				t.Fatalf("Stats().Allocations = %d, want 2", got)
			}
			const n, size = 20, 120 // 20 ms Opus-sized datagrams
			exchange := func(from, to net.PacketConn, tag byte) {
				t.Helper()
				for i := 0; i < n; i++ {
					msg := bytes.Repeat([]byte{tag, byte(i)}, size/2)
					if _, err := from.WriteTo(msg, to.LocalAddr()); err != nil {
						t.Fatalf("write through relay: %v", err)
					}
					got, src := readWithin(t, to, 3*time.Second)
					if !bytes.Equal(got, msg) {
						t.Fatalf("packet %d: got %d bytes %x…, want %x…", i, len(got), got[:min(4, len(got))], msg[:4])
					}
					if src.String() != from.LocalAddr().String() {
						t.Fatalf("packet from %v, want the sender's relayed address %v", src, from.LocalAddr())
					}
				}
			}
			exchange(a, b, 'a')
			exchange(b, a, 'b')

			// Each datagram crossed the relay twice: client to peer (into the
			// other allocation), then peer to client.
			// The sender's counter is bumped after its write returns, which
			// may be after the receiver has the datagram.
			eventually(t, 2*time.Second, "the counters", func() bool {
				st := srv.Stats()
				return st.ToPeerPackets >= 2*n && st.ToClientPackets >= 2*n
			})
			st := srv.Stats()
			if st.ToPeerPackets != 2*n || st.ToClientPackets != 2*n {
				t.Errorf("relayed packets to peer/client = %d/%d, want %d each", st.ToPeerPackets, st.ToClientPackets, 2*n)
			}
			if st.ToPeerBytes != 2*n*size || st.ToClientBytes != 2*n*size {
				t.Errorf("relayed bytes to peer/client = %d/%d, want %d each", st.ToPeerBytes, st.ToClientBytes, 2*n*size)
			}
			if st.RefusedAuth+st.RefusedPolicy+st.RefusedQuota+st.DroppedRate+st.DroppedPolicy != 0 {
				t.Errorf("unexpected refusals or drops: %+v", st)
			}
			for _, m := range []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"parley_turn_allocations", nil, 2},
				{"parley_turn_relayed_packets_total", map[string]string{"direction": "to_peer"}, 2 * n},
				{"parley_turn_relayed_packets_total", map[string]string{"direction": "to_client"}, 2 * n},
				{"parley_turn_relayed_bytes_total", map[string]string{"direction": "to_peer"}, 2 * n * size},
				{"parley_turn_relayed_bytes_total", map[string]string{"direction": "to_client"}, 2 * n * size},
				{"parley_turn_refusals_total", map[string]string{"reason": "auth"}, 0},
			} {
				if got := metric(t, reg, m.name, m.labels); got != m.want {
					t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
				}
			}
			a.Close() // a Refresh with lifetime 0 deletes the allocation
			eventually(t, 3*time.Second, "allocation count to drop to 1", func() bool { return srv.Stats().Allocations == 1 })
		})
	}
}

// TestUnauthenticatedAllocateRefused: an Allocate without MESSAGE-INTEGRITY
// only gets the 401 challenge (with NONCE and REALM) and no allocation.
func TestUnauthenticatedAllocateRefused(t *testing.T) {
	srv := startServer(t, nil)
	c := newRawClient(t, srv.UDPAddr(), "", "")
	for i := 0; i < 3; i++ {
		res := c.request(stun.MethodAllocate, requestedTransportUDP{})
		if code := errorCode(t, res); code != stun.CodeUnauthorized {
			t.Fatalf("Allocate without credentials: code %d, want 401", code)
		}
		var r stun.Realm
		if err := r.GetFrom(res); err != nil || r.String() != DefaultRealm {
			t.Fatalf("401 realm %q, %v", r, err)
		}
		if res.Contains(stun.AttrXORRelayedAddress) {
			t.Fatal("401 carries a relayed address")
		}
	}
	if st := srv.Stats(); st.Allocations != 0 {
		t.Fatalf("allocations after unauthenticated requests: %d", st.Allocations)
	}
}

// TestBadCredentialsRefused: expired, future-dated, wrong-HMAC, malformed
// and other-realm credentials get an error response, no allocation, and a
// refusal counted as auth; a good credential (the control) is allocated.
func TestBadCredentialsRefused(t *testing.T) {
	now := time.Now()
	srv := startServer(t, func(c *Config) {
		c.MaxCredentialTTL = 2 * time.Hour
		c.Now = func() time.Time { return now }
	})
	mk := func(secret, id string, ttl time.Duration) turnrest.Credential {
		return turnrest.Credential{Username: fmt.Sprintf("%d:%s", now.Add(ttl).Unix(), id),
			Password: turnrest.Password(secret, fmt.Sprintf("%d:%s", now.Add(ttl).Unix(), id))}
	}
	good := mk(testSecret, "good", time.Hour)
	tests := []struct {
		name  string
		cred  turnrest.Credential
		realm string
		ok    bool
	}{
		{"good (control)", good, "", true},
		{"expired", mk(testSecret, "late", -10*time.Second), "", false},
		{"future-dated beyond max TTL", mk(testSecret, "early", 3*time.Hour), "", false},
		{"wrong HMAC (other secret)", mk("another-secret-0123456789", "forger", time.Hour), "", false},
		{"wrong password", turnrest.Credential{Username: good.Username, Password: "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "", false},
		{"malformed username", turnrest.Credential{Username: "alice", Password: turnrest.Password(testSecret, "alice")}, "", false},
		{"unknown scheme (bare expiry)", mk(testSecret, "", time.Hour), "", false},
		{"other realm", good, "example.org", false},
	}
	var refusals uint64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, srv.UDPAddr(), tc.cred.Username, tc.cred.Password)
			c.realm = tc.realm
			res := c.allocate(4)
			code := errorCode(t, res)
			if tc.ok {
				if code != 0 {
					t.Fatalf("good credential refused with %d", code)
				}
				relayedAddr(t, res)
				c.request(stun.MethodRefresh, lifetimeZero{}) // free it
				return
			}
			refusals++
			if code == 0 {
				t.Fatalf("allocated with a bad credential: %v", relayedAddr(t, res))
			}
			if code != stun.CodeBadRequest && code != stun.CodeUnauthorized {
				t.Fatalf("code %d, want 400 or 401", code)
			}
			if got := srv.Stats().RefusedAuth; got != refusals {
				t.Fatalf("RefusedAuth = %d, want %d", got, refusals)
			}
		})
	}
	eventually(t, 2*time.Second, "no allocation left", func() bool { return srv.Stats().Allocations == 0 })
}

type lifetimeZero struct{}

func (lifetimeZero) AddTo(m *stun.Message) error {
	m.Add(stun.AttrLifetime, []byte{0, 0, 0, 0})
	return nil
}

// TestRefusedPeersOnTheWire: with nothing allowed, CreatePermission and
// ChannelBind toward every special-purpose address (in IPv4, IPv6 and
// IPv4-mapped spellings) get error responses and are counted as policy
// refusals; public addresses (the control) are permitted.
func TestRefusedPeersOnTheWire(t *testing.T) {
	six := have6()
	srv := startServer(t, nil)
	cred := issue(t, "mallory")
	c4 := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
	if code := errorCode(t, c4.allocate(4)); code != 0 {
		t.Fatalf("IPv4 allocate: %d", code)
	}
	var c6 *rawClient
	if six {
		c6 = newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
		if code := errorCode(t, c6.allocate(6)); code != 0 {
			t.Fatalf("IPv6 allocate: %d", code)
		}
	}
	tests := []struct {
		peer string
		ok   bool
	}{
		{"0.0.0.0", false},
		{"127.0.0.1", false},
		{"::ffff:127.0.0.1", false}, // IPv6 family on the wire, IPv4 allocation
		{"::ffff:10.0.0.1", false},
		{"169.254.169.254", false},
		{"10.0.0.1", false},
		{"172.16.5.4", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"8.8.8.8", true},
		{"::", false},
		{"::1", false},
		{"fc00::1", false},
		{"fe80::1", false},
		{"ff02::1", false},
		{"64:ff9b::7f00:1", false},
		{"2001:4860:4860::8888", true},
	}
	ch := uint16(0x4000)
	for _, tc := range tests {
		t.Run(tc.peer, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.peer)
			c := c4
			if ip.Is6() && !ip.Is4In6() {
				if !six {
					t.Skip("no IPv6 loopback on this host")
				}
				c = c6
			}
			peer := peerAddr{ip: ip, port: 9}
			before := srv.Stats().RefusedPolicy
			cp := errorCode(t, c.request(stun.MethodCreatePermission, peer))
			ch++
			cb := errorCode(t, c.request(stun.MethodChannelBind, channelNumber(ch), peer))
			if tc.ok {
				if cp != 0 || cb != 0 {
					t.Fatalf("public peer refused: CreatePermission %d, ChannelBind %d", cp, cb)
				}
				return
			}
			if cp != stun.CodeForbidden {
				t.Errorf("CreatePermission toward %s: code %d, want 403", ip, cp)
			}
			if cb == 0 {
				t.Errorf("ChannelBind toward %s succeeded", ip)
			}
			if got := srv.Stats().RefusedPolicy - before; got != 2 {
				t.Errorf("policy refusals counted: %d, want 2", got)
			}
		})
	}
}

// TestSendTowardRefusedPeerNeverArrives: a victim UDP socket on 127.0.0.1
// receives nothing from an allocation when 127.0.0.0/8 is not allowed,
// whether the client sends a Send indication without a permission, after a
// refused CreatePermission, in the IPv4-mapped spelling, or as ChannelData
// after a refused ChannelBind. The control: with 127.0.0.0/8 allowed, the
// same Send indication arrives.
func TestSendTowardRefusedPeerNeverArrives(t *testing.T) {
	victim, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	vp := victim.LocalAddr().(*net.UDPAddr).AddrPort()
	peer := peerAddr{ip: vp.Addr(), port: vp.Port()}
	mapped := peerAddr{ip: netip.AddrFrom16(vp.Addr().As16()), port: vp.Port()}
	cred := issue(t, "mallory")

	t.Run("control: allowed", func(t *testing.T) {
		// The victim is on the relay's own 127.0.0.1: the test-only opt-in.
		srv := startServer(t, func(c *Config) { c.AllowCIDRs = allowLoop; c.AllowOwnAddrs = true })
		c := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
		if code := errorCode(t, c.allocate(4)); code != 0 {
			t.Fatalf("allocate: %d", code)
		}
		if code := errorCode(t, c.request(stun.MethodCreatePermission, peer)); code != 0 {
			t.Fatalf("CreatePermission: %d", code)
		}
		c.sendIndication(peer, []byte("hello victim"))
		if got, _ := readWithin(t, victim, 2*time.Second); string(got) != "hello victim" {
			t.Fatalf("control: victim got %q", got)
		}
	})
	t.Run("refused", func(t *testing.T) {
		srv := startServer(t, nil)
		c := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
		if code := errorCode(t, c.allocate(4)); code != 0 {
			t.Fatalf("allocate: %d", code)
		}
		c.sendIndication(peer, []byte("no permission"))
		if code := errorCode(t, c.request(stun.MethodCreatePermission, peer)); code != stun.CodeForbidden {
			t.Fatalf("CreatePermission toward the victim: %d, want 403", code)
		}
		c.sendIndication(peer, []byte("after refused permission"))
		if code := errorCode(t, c.request(stun.MethodCreatePermission, mapped)); code != stun.CodeForbidden {
			t.Fatalf("CreatePermission toward the mapped victim: %d, want 403", code)
		}
		c.sendIndication(mapped, []byte("mapped spelling"))
		if code := errorCode(t, c.request(stun.MethodChannelBind, channelNumber(0x4001), peer)); code == 0 {
			t.Fatal("ChannelBind toward the victim succeeded")
		}
		c.channelData(0x4001, []byte("channel data"))
		expectSilence(t, victim, 700*time.Millisecond)
		if st := srv.Stats(); st.ToPeerPackets != 0 {
			t.Fatalf("relay counted %d packets to peers", st.ToPeerPackets)
		}
	})
}

// TestRelayNeverSendsToItsOwnListener: even with loopback allowed, data
// toward the relay's own UDP listener is dropped by the relayed socket.
func TestRelayNeverSendsToItsOwnListener(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.AllowCIDRs = allowLoop })
	cred := issue(t, "loop")
	c := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
	if code := errorCode(t, c.allocate(4)); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	self := peerAddr{ip: loopback4, port: uint16(srv.UDPAddr().Port)}
	if code := errorCode(t, c.request(stun.MethodCreatePermission, self)); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}
	c.sendIndication(self, []byte("loop"))
	eventually(t, 2*time.Second, "a policy drop", func() bool { return srv.Stats().DroppedPolicy == 1 })
	if st := srv.Stats(); st.ToPeerPackets != 0 {
		t.Fatalf("relayed %d packets to ourselves", st.ToPeerPackets)
	}
}

// TestQuotas: the (N+1)th allocation of one credential id, of one client
// IP, and on the whole server is refused with 486; freeing one lets the
// next in.
func TestQuotas(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		ids  func(i int) string
		n    int
	}{
		{"per user", func(c *Config) { c.MaxAllocationsPerUser = 3 }, func(int) string { return "same-user" }, 3},
		{"per IP", func(c *Config) { c.MaxAllocationsPerIP = 4 }, func(i int) string { return fmt.Sprint("user-", i) }, 4},
		{"total", func(c *Config) { c.MaxAllocations = 5 }, func(i int) string { return fmt.Sprint("user-", i) }, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.mod)
			var clients []*rawClient
			for i := 0; i <= tc.n; i++ {
				cred := issue(t, tc.ids(i))
				c := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
				code := errorCode(t, c.allocate(4))
				switch {
				case i < tc.n && code != 0:
					t.Fatalf("allocation %d refused with %d", i+1, code)
				case i == tc.n && code != stun.CodeAllocQuotaReached:
					t.Fatalf("allocation %d: code %d, want 486", i+1, code)
				}
				clients = append(clients, c)
			}
			if st := srv.Stats(); st.Allocations != tc.n || st.RefusedQuota != 1 {
				t.Fatalf("allocations %d, quota refusals %d; want %d, 1", st.Allocations, st.RefusedQuota, tc.n)
			}
			if code := errorCode(t, clients[0].request(stun.MethodRefresh, lifetimeZero{})); code != 0 {
				t.Fatalf("free: %d", code)
			}
			eventually(t, 2*time.Second, "a free slot", func() bool { return srv.Stats().Allocations == tc.n-1 })
			if code := errorCode(t, clients[tc.n].allocate(4)); code != 0 {
				t.Fatalf("allocation after freeing one refused with %d", code)
			}
		})
	}
}

// TestRateCap: an allocation relays at most MaxPacketsPerSecond (one
// second of burst); the rest is dropped and counted.
func TestRateCap(t *testing.T) {
	const pps = 50
	srv := startServer(t, func(c *Config) { c.AllowCIDRs = allowLoop; c.AllowOwnAddrs = true; c.MaxPacketsPerSecond = pps })
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cred := issue(t, "flooder")
	c := turnClient(t, "udp", srv.UDPAddr().String(), cred.Username, cred.Password)
	rc := allocate(t, c)
	for i := 0; i < 4*pps; i++ {
		rc.WriteTo([]byte("flood"), peer.LocalAddr())
	}
	eventually(t, 3*time.Second, "drops", func() bool { return srv.Stats().DroppedRate > 0 })
	time.Sleep(100 * time.Millisecond)
	st := srv.Stats()
	if st.ToPeerPackets > pps+10 { // a burst of pps, plus what refilled meanwhile
		t.Fatalf("relayed %d of %d packets with a cap of %d/s", st.ToPeerPackets, 4*pps, pps)
	}
	if st.ToPeerPackets+st.DroppedRate < 4*pps-5 { // pion's client may still be binding
		t.Logf("relayed %d, dropped %d", st.ToPeerPackets, st.DroppedRate)
	}
}

// TestMaxAllocationDuration: an allocation is closed when it reaches
// MaxAllocationDuration, refreshed or not.
func TestMaxAllocationDuration(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.MaxAllocationDuration = time.Second })
	cred := issue(t, "lingerer")
	c := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
	if code := errorCode(t, c.allocate(4)); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	if srv.Stats().Allocations != 1 {
		t.Fatal("no allocation")
	}
	eventually(t, 3*time.Second, "the allocation to be closed", func() bool { return srv.Stats().Allocations == 0 })
}

// TestStreamConnectionLimit: TCP connections beyond the per-IP cap are
// closed at once and counted as quota refusals.
func TestStreamConnectionLimit(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.MaxAllocationsPerIP = 2 })
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		c, err := net.DialTimeout("tcp", srv.TCPAddr().String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	conns[2].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conns[2].Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection was not closed")
	}
	if got := srv.Stats().RefusedQuota; got != 1 {
		t.Fatalf("RefusedQuota = %d, want 1", got)
	}
}

// TestTLSFromFiles: the TLS listener loads a PEM certificate and key from
// files and serves TURN over TLS with them.
func TestTLSFromFiles(t *testing.T) {
	conf := selfSignedTLS(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, err := x509.MarshalPKCS8PrivateKey(conf.Certificates[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: conf.Certificates[0].Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, func(c *Config) {
		c.UDPAddr, c.TCPAddr = "", ""
		c.TLSAddr, c.TLSCertFile, c.TLSKeyFile = "127.0.0.1:0", certFile, keyFile
	})
	cred := issue(t, "tls-user")
	allocate(t, turnClient(t, "tls", srv.TLSAddr().String(), cred.Username, cred.Password))
	if srv.Stats().Allocations != 1 {
		t.Fatal("no allocation over TLS")
	}
	if _, err := New(Config{TLSAddr: "127.0.0.1:0", TLSCertFile: keyFile, TLSKeyFile: certFile,
		RelayIPs: []netip.Addr{loopback4}, Secret: testSecret, Logger: testLogger()}); err == nil {
		t.Fatal("swapped certificate and key files accepted")
	}
}

// TestRelayRefusesEveryPortOfItsOwnAddrs: a client must not reach a
// co-located service (here a UDP socket standing for the host's libp2p QUIC
// port) on the relay's own address, even with loopback allowed; another
// allocation's relayed port on the same address stays reachable. With the
// test-only AllowOwnAddrs opt-in the service is reachable, the listener
// still is not.
func TestRelayRefusesEveryPortOfItsOwnAddrs(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allowOwn    bool
		wantRelayed bool
		wantDropped uint64
	}{
		{"default", false, false, 1},
		{"test-only opt-in", true, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, func(c *Config) { c.AllowCIDRs = allowLoop; c.AllowOwnAddrs = tc.allowOwn })
			service, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer service.Close()
			cred := issue(t, "prober")
			c := newRawClient(t, srv.UDPAddr(), cred.Username, cred.Password)
			if code := errorCode(t, c.allocate(4)); code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			svc := peerAddr{ip: loopback4, port: uint16(service.LocalAddr().(*net.UDPAddr).Port)}
			if code := errorCode(t, c.request(stun.MethodCreatePermission, svc)); code != 0 {
				t.Fatalf("CreatePermission: %d", code)
			}
			c.sendIndication(svc, []byte("probe"))
			if tc.wantRelayed {
				if got, _ := readWithin(t, service, 3*time.Second); string(got) != "probe" {
					t.Fatalf("service got %q", got)
				}
			} else {
				eventually(t, 2*time.Second, "a policy drop", func() bool { return srv.Stats().DroppedPolicy == tc.wantDropped })
				expectSilence(t, service, 300*time.Millisecond)
			}
			// The relay's own listener is refused either way.
			self := peerAddr{ip: loopback4, port: uint16(srv.UDPAddr().Port)}
			c.request(stun.MethodCreatePermission, self)
			c.sendIndication(self, []byte("loop"))
			eventually(t, 2*time.Second, "a policy drop", func() bool { return srv.Stats().DroppedPolicy == tc.wantDropped+1 })
		})
	}
}
