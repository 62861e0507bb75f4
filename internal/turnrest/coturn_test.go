package turnrest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// coturnConf is the configuration the interop test runs coturn with: REST
// credentials under our secret, plain UDP/TCP on loopback only, loopback
// peers allowed so two allocations can reach each other, nothing else.
const coturnConf = `listening-ip=127.0.0.1
listening-port=%d
relay-ip=127.0.0.1
min-port=%d
max-port=%d
realm=parley
use-auth-secret
static-auth-secret=%s
allow-loopback-peers
allowed-peer-ip=127.0.0.1
no-multicast-peers
no-tls
no-dtls
no-cli
no-rfc5780
no-stun-backward-compatibility
fingerprint
userdb=%s
pidfile=%s
log-file=stdout
simple-log
`

// syncBuffer collects coturn's output for the failure message.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCoturn runs Debian's coturn on 127.0.0.1 with coturnConf and returns
// its UDP address; the test is skipped when coturn is not installed.
func startCoturn(t *testing.T, secret string) string {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		t.Skip("coturn's turnserver is not on PATH (apt-get install coturn); skipping the coturn interop test")
	}
	dir := t.TempDir()
	port := nodetest.FixedPort(t, "127.0.0.1")
	conf := filepath.Join(dir, "turnserver.conf")
	body := fmt.Sprintf(coturnConf, port, 43000, 43999, secret, filepath.Join(dir, "turndb"), filepath.Join(dir, "turnserver.pid"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatalf("start coturn: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("coturn output:\n%s", out.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("coturn exited: %v\n%s", err, out.String())
		default:
		}
		if bindingWorks(addr) {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("coturn did not answer STUN on %s within 10s\n%s", addr, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func quiet() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}

func newClient(t *testing.T, addr, user, pass string) *turn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass,
		Conn: conn, RTO: 200 * time.Millisecond, LoggerFactory: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

func bindingWorks(addr string) bool {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return false
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, Conn: conn, RTO: 100 * time.Millisecond, LoggerFactory: quiet()})
	if err != nil {
		return false
	}
	defer c.Close()
	if c.Listen() != nil {
		return false
	}
	done := make(chan error, 1)
	go func() { _, err := c.SendBindingRequest(); done <- err }()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(time.Second):
		return false
	}
}

// TestCoturnAcceptsOurCredentials: credentials from Issue allocate on a
// stock coturn configured with use-auth-secret and the same secret, and two
// such allocations relay datagrams both ways; a wrong HMAC, an expired
// credential and an unknown secret are refused by coturn.
func TestCoturnAcceptsOurCredentials(t *testing.T) {
	addr := startCoturn(t, testSecret)
	now := time.Now()
	good := func(id string) Credential {
		c, err := Issue(testSecret, id, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := good("alice"), good("bob")
	ca, cb := newClient(t, addr, a.Username, a.Password), newClient(t, addr, b.Username, b.Password)
	ra, err := ca.Allocate()
	if err != nil {
		t.Fatalf("coturn refused our credential: %v", err)
	}
	defer ra.Close()
	rb, err := cb.Allocate()
	if err != nil {
		t.Fatalf("coturn refused our second credential: %v", err)
	}
	defer rb.Close()
	if err := ca.CreatePermission(rb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := cb.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []struct {
		from, to net.PacketConn
		msg      string
	}{{ra, rb, "alice to bob through coturn"}, {rb, ra, "bob to alice through coturn"}} {
		if _, err := dir.from.WriteTo([]byte(dir.msg), dir.to.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		dir.to.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		n, _, err := dir.to.ReadFrom(buf)
		if err != nil || string(buf[:n]) != dir.msg {
			t.Fatalf("%s: got %q, %v", dir.msg, buf[:n], err)
		}
	}

	bad := []struct {
		name string
		cred Credential
	}{
		{"wrong HMAC", Credential{Username: good("mallory").Username, Password: "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}},
		{"other secret", func() Credential {
			c, _ := Issue("not-the-relay-secret-0123", "mallory", time.Hour, now)
			return c
		}()},
		{"expired", func() Credential {
			c, _ := Issue(testSecret, "mallory", time.Second, now.Add(-time.Hour))
			return c
		}()},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, addr, tc.cred.Username, tc.cred.Password)
			rc, err := c.Allocate()
			if err == nil {
				rc.Close()
				t.Fatalf("coturn allocated %v with a bad credential", rc.LocalAddr())
			}
			t.Logf("coturn: %v", err)
			var te *stun.TurnError
			if !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeUnauthorized {
				t.Fatalf("coturn refused with %v, want a 401 error response", err)
			}
		})
	}
}
