package netcheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/internal/turnrest"
	"github.com/parley-net/parley/supernode"
)

const secret = "netcheck-test-secret-0123456789abcdef"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in        string
		hostport  string
		transport string
		bad       bool
	}{
		{in: "stun:127.0.0.1:3478", hostport: "127.0.0.1:3478", transport: "udp"},
		{in: "turn:198.51.100.1:3479?transport=udp", hostport: "198.51.100.1:3479", transport: "udp"},
		{in: "turn:198.51.100.1:80?transport=tcp", hostport: "198.51.100.1:80", transport: "tcp"},
		{in: "turns:relay.example:443?transport=tcp", hostport: "relay.example:443", transport: "tls"},
		{in: "turn:[2001:db8::1]:3478", hostport: "[2001:db8::1]:3478", transport: "udp"},
		{in: "http://x:1", bad: true},
		{in: "stun:host", bad: true},
		{in: "turn:h:1?transport=sctp", bad: true},
	} {
		u, err := ParseURL(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: parsed, want an error", tc.in)
			}
			continue
		}
		if err != nil || u.HostPort != tc.hostport || u.transport() != tc.transport {
			t.Errorf("%s: %+v (%s), %v; want %s over %s", tc.in, u, u.transport(), err, tc.hostport, tc.transport)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mapped  []string
		udp     bool
		mapping string
	}{
		{"none answered", []string{"", ""}, false, MappingNoUDP},
		{"one answered behind a NAT", []string{"198.51.100.7:4000", ""}, true, MappingUnknown},
		{"same everywhere", []string{"198.51.100.7:4000", "198.51.100.7:4000", "198.51.100.7:4000"}, true, MappingIndependent},
		{"port per destination", []string{"198.51.100.7:4000", "198.51.100.7:4001"}, true, MappingDependent},
		{"one answered without NAT", []string{"127.0.0.1:4000"}, true, MappingIndependent},
	} {
		r := &Report{}
		for _, m := range tc.mapped {
			r.STUN = append(r.STUN, STUNResult{Mapped: m})
		}
		r.classify()
		if r.UDP != tc.udp || r.Mapping != tc.mapping {
			t.Errorf("%s: UDP %v mapping %s, want %v %s", tc.name, r.UDP, r.Mapping, tc.udp, tc.mapping)
		}
	}
}

// TestRunLoopback measures against a real STUN server and a real TURN
// server (UDP and TCP) on 127.0.0.1, and a STUN port nobody answers.
func TestRunLoopback(t *testing.T) {
	stunSrv, err := supernode.ListenSTUN("127.0.0.1:0", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer stunSrv.Close()
	relay, err := turnrelay.New(turnrelay.Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0",
		RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Secret: secret, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	cred, err := turnrest.Issue(secret, "netcheck", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0") // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()

	pinged := 0
	cfg := Config{Timeout: time.Second, Logger: quiet, Targets: []Target{
		{Tier: "supernode", Name: "sn", STUN: []string{"stun:" + stunSrv.Addr().String()},
			Ping: func(context.Context) (time.Duration, error) { pinged++; return 3 * time.Millisecond, nil }},
		{Tier: "cloud", Name: "cloud", Username: cred.Username, Password: cred.Password, TURN: []string{
			fmt.Sprintf("turn:%s?transport=udp", relay.UDPAddr()),
			fmt.Sprintf("turn:%s?transport=tcp", relay.TCPAddr()),
		}},
		{Tier: "supernode", Name: "dead", STUN: []string{"stun:" + dead.LocalAddr().String()}, TURNError: "no TURN offered"},
	}}
	base := runtime.NumGoroutine()
	start := time.Now()
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v with a 1s timeout per probe", took)
	}
	t.Logf("%+v", r)
	if !r.UDP || r.Mapping != MappingIndependent || !r.Public {
		t.Errorf("udp %v mapping %q public %v, want UDP, %s, public on loopback", r.UDP, r.Mapping, r.Public, MappingIndependent)
	}
	if len(r.STUN) != 3 || r.STUN[0].Mapped == "" || r.STUN[1].Mapped != r.STUN[0].Mapped || r.STUN[2].Error == "" {
		t.Errorf("STUN results %+v: want the supernode and the relay's UDP port to see one address, the dead port none", r.STUN)
	}
	if !r.TURNReachable("cloud", "udp") || !r.TURNReachable("cloud", "tcp") || r.TURNReachable("supernode", "") {
		t.Errorf("TURN results %+v: want cloud over UDP and TCP, no supernode", r.TURN)
	}
	if len(r.Ping) != 1 || pinged != 1 || r.Ping[0].RTTMS != 3 {
		t.Errorf("ping results %+v", r.Ping)
	}
	if st := relay.Stats(); st.Allocations != 0 {
		t.Errorf("%d allocations left on the relay", st.Allocations)
	}
	// Nothing of the check outlives it (the TURN server's own goroutines
	// for the closed TCP connection may take a moment to go).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the check:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunBadCredentials(t *testing.T) {
	relay, err := turnrelay.New(turnrelay.Config{UDPAddr: "127.0.0.1:0",
		RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Secret: secret, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	r, err := Run(context.Background(), Config{Timeout: time.Second, Logger: quiet, Targets: []Target{
		{Tier: "cloud", Name: "cloud", Username: "1:x", Password: "wrong", TURN: []string{"turn:" + relay.UDPAddr().String()}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.TURNReachable("", "") || r.TURN[0].Error == "" {
		t.Errorf("TURN %+v: want a refusal", r.TURN)
	}
	if r.Mapping != MappingIndependent || !r.Public {
		t.Errorf("mapping %q public %v with one STUN destination on loopback, want %s: no NAT", r.Mapping, r.Public, MappingIndependent)
	}
	if _, err := Run(context.Background(), Config{}); !errors.Is(err, ErrNoTargets) {
		t.Errorf("no targets: %v, want ErrNoTargets", err)
	}
}

// TestTURNOverTLS allocates over turns: on a real TURN server with a
// certificate for 127.0.0.1, and fails to when the certificate is not
// trusted.
func TestTURNOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := selfSigned(t, certFile, keyFile)
	relay, err := turnrelay.New(turnrelay.Config{TLSAddr: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile,
		RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Secret: secret, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	cred, _ := turnrest.Issue(secret, "netcheck", time.Hour, time.Now())
	target := Target{Tier: "cloud", Name: "cloud", Username: cred.Username, Password: cred.Password,
		TURN: []string{fmt.Sprintf("turns:%s?transport=tcp", relay.TLSAddr())}}
	for _, tc := range []struct {
		name    string
		roots   *x509.CertPool
		success bool
	}{{"trusted", pool, true}, {"untrusted", x509.NewCertPool(), false}} {
		r, err := Run(context.Background(), Config{Timeout: 2 * time.Second, Logger: quiet, Targets: []Target{target},
			TLSConfig: &tls.Config{RootCAs: tc.roots}})
		if err != nil {
			t.Fatal(err)
		}
		if r.TURNReachable("cloud", "tls") != tc.success {
			t.Errorf("%s certificate: TURN over TLS %+v, want success %v", tc.name, r.TURN, tc.success)
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a
// pool that trusts it.
func selfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "netcheck test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
