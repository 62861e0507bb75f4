package turnrelay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/turnrest"
)

const testSecret = "turnrelay-test-secret-0123456789"

var (
	loopback4 = netip.MustParseAddr("127.0.0.1")
	loopback6 = netip.MustParseAddr("::1")
	allowLoop = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
)

func testLogger() *slog.Logger {
	lv := slog.LevelError
	if os.Getenv("TURNRELAY_DEBUG") != "" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
}

func have6() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startServer starts a relay on 127.0.0.1 (UDP and TCP, ephemeral ports)
// relaying on 127.0.0.1 (and ::1 when the host has it), changed by mod, and
// closes it at the end of the test, checking that pion's goroutines went
// with it.
func startServer(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		UDPAddr:  "127.0.0.1:0",
		TCPAddr:  "127.0.0.1:0",
		RelayIPs: []netip.Addr{loopback4},
		Secret:   testSecret,
		Logger:   testLogger(),
	}
	if have6() {
		cfg.RelayIPs = append(cfg.RelayIPs, loopback6)
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("start relay: %v", err)
	}
	checkGoroutines(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close relay: %v", err)
		}
	})
	return s
}

// checkGoroutines fails the test if, after its cleanups, goroutines of the
// TURN server or of pion/turn are still running (a few seconds' grace).
func checkGoroutines(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			left := turnGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines left behind:\n%s", len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func turnGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "turnrelay.checkGoroutines") || strings.Contains(g, "turnrelay.turnGoroutines") {
			continue
		}
		if strings.Contains(g, "github.com/pion/turn/v5") || strings.Contains(g, "internal/turnrelay.(*") {
			out = append(out, g)
		}
	}
	return out
}

func issue(t testing.TB, id string) turnrest.Credential {
	t.Helper()
	c, err := turnrest.Issue(testSecret, id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// quietPion keeps pion's client logs out of test output.
func quietPion() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}

// turnClient is a pion/turn client over UDP, TCP or TLS to addr.
func turnClient(t testing.TB, transport, addr, user, pass string) *turn.Client {
	t.Helper()
	var conn net.PacketConn
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	case "tls":
		d := &net.Dialer{Timeout: 2 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // self-signed test cert
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	default:
		t.Fatalf("transport %q", transport)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass,
		Conn: conn, RTO: 200 * time.Millisecond, LoggerFactory: quietPion(),
	})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		conn.Close()
	})
	return c
}

// allocate makes an allocation and closes it at the end of the test.
func allocate(t testing.TB, c *turn.Client) net.PacketConn {
	t.Helper()
	rc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// selfSignedTLS is a certificate for 127.0.0.1 and localhost.
func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "parley test relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

// metric reads one sample from reg: name with the given label values.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawClient speaks TURN by hand, for requests pion's client will not send
// (refused peers, IPv4-mapped spellings, bad credentials).
type rawClient struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr
	user   string
	pass   string
	realm  string
	nonce  string
}

func newRawClient(t *testing.T, server *net.UDPAddr, user, pass string) *rawClient {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, server: server, user: user, pass: pass}
}

// send writes one message built from setters.
func (c *rawClient) send(setters ...stun.Setter) *stun.Message {
	c.t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.WriteToUDP(m.Raw, c.server); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// request sends a request (authenticated once a nonce is known, with the
// realm the client holds) and returns the response, retransmitting on loss.
func (c *rawClient) request(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
	setters = append(setters, attrs...)
	if c.nonce != "" {
		setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
			stun.NewLongTermIntegrity(c.user, c.realm, c.pass))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for try := 0; try < 4; try++ {
		if _, err := c.conn.WriteToUDP(m.Raw, c.server); err != nil {
			c.t.Fatal(err)
		}
		c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				break // timeout: retransmit
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == m.TransactionID {
				return res
			}
		}
	}
	c.t.Fatalf("no response to %v", method)
	return nil
}

// errorCode is the response's error code, or 0 for a success.
func errorCode(t *testing.T, m *stun.Message) stun.ErrorCode {
	t.Helper()
	if m.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var e stun.ErrorCodeAttribute
	if err := e.GetFrom(m); err != nil {
		t.Fatalf("error response without ERROR-CODE: %v", m)
	}
	return e.Code
}

// allocate runs the 401 challenge and an authenticated Allocate of family
// (4 or 6), returning the response.
func (c *rawClient) allocate(family int) *stun.Message {
	c.t.Helper()
	attrs := []stun.Setter{requestedTransportUDP{}}
	if family == 6 {
		attrs = append(attrs, requestedFamily6{})
	}
	if c.nonce == "" {
		res := c.request(stun.MethodAllocate, attrs...)
		if code := errorCode(c.t, res); code != stun.CodeUnauthorized {
			c.t.Fatalf("unauthenticated Allocate: code %d, want 401", code)
		}
		var n stun.Nonce
		var r stun.Realm
		if n.GetFrom(res) != nil || r.GetFrom(res) != nil {
			c.t.Fatal("401 without NONCE and REALM")
		}
		c.nonce = n.String()
		if c.realm == "" {
			c.realm = r.String()
		}
	}
	return c.request(stun.MethodAllocate, attrs...)
}

func relayedAddr(t *testing.T, m *stun.Message) netip.AddrPort {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("no XOR-RELAYED-ADDRESS: %v", err)
	}
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

type requestedTransportUDP struct{}

func (requestedTransportUDP) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
}

type requestedFamily6 struct{}

func (requestedFamily6) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedAddressFamily, []byte{0x02, 0, 0, 0})
	return nil
}

// peerAddr is an XOR-PEER-ADDRESS written byte by byte (RFC 8489 §14.2),
// so an IPv4-mapped IPv6 address keeps its IPv6 family on the wire.
type peerAddr struct {
	ip   netip.Addr // As16 of an IPv4-mapped address is sent as IPv6
	port uint16
}

func (p peerAddr) AddTo(m *stun.Message) error {
	var v []byte
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], p.port^uint16(magicCookie>>16))
	var key [16]byte
	binary.BigEndian.PutUint32(key[:4], magicCookie)
	copy(key[4:], m.TransactionID[:])
	if p.ip.Is4() {
		a := p.ip.As4()
		v = append([]byte{0, 0x01}, port[:]...)
		for i := range a {
			v = append(v, a[i]^key[i])
		}
	} else {
		a := p.ip.As16()
		v = append([]byte{0, 0x02}, port[:]...)
		for i := range a {
			v = append(v, a[i]^key[i])
		}
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

const magicCookie = 0x2112A442 // RFC 8489 §5

type channelNumber uint16

func (c channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(c >> 8), byte(c), 0, 0})
	return nil
}

type dataAttr []byte

func (d dataAttr) AddTo(m *stun.Message) error {
	m.Add(stun.AttrData, d)
	return nil
}

// sendIndication sends a Send indication toward peer.
func (c *rawClient) sendIndication(peer peerAddr, payload []byte) {
	c.t.Helper()
	c.send(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), peer, dataAttr(payload), stun.Fingerprint)
}

// channelData sends a ChannelData message on channel.
func (c *rawClient) channelData(ch uint16, payload []byte) {
	c.t.Helper()
	b := make([]byte, 4, 4+len(payload)+3)
	binary.BigEndian.PutUint16(b, ch)
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	if _, err := c.conn.WriteToUDP(b, c.server); err != nil {
		c.t.Fatal(err)
	}
}

// expectSilence fails if conn receives anything within d.
func expectSilence(t *testing.T, conn net.PacketConn, d time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFrom(buf)
	if err == nil {
		t.Fatalf("victim received %d bytes from %v: %q", n, from, buf[:n])
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("victim read: %v", err)
	}
}

func readWithin(t *testing.T, conn net.PacketConn, d time.Duration) ([]byte, net.Addr) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read within %v: %v", d, err)
	}
	return buf[:n], from
}
