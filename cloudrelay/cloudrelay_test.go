package cloudrelay

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"go.uber.org/goleak"

	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/turncreds"
)

const testSecret = "cloudrelay-test-secret-0123456789"

func testConfig(t *testing.T) Config {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		TURN: turnrelay.Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
			Secret: testSecret, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		Key:         key,
		Listen:      []string{"/ip4/127.0.0.1/tcp/0"},
		MetricsAddr: "127.0.0.1:0",
		Logger:      slog.New(slog.DiscardHandler),
	}
}

// checkLeaks fails t if goroutines started during it outlive its cleanups.
func checkLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// allocateUDP makes a TURN allocation over UDP at addr ("HOST:PORT") and
// releases it at the end of the test.
func allocateUDP(t *testing.T, addr, user, pass string) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := logging.NewDefaultLoggerFactory()
	quiet.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass,
		Conn: conn, RTO: 200 * time.Millisecond, LoggerFactory: quiet})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		conn.Close()
	})
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	rc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { rc.Close() })
}

// TestCloudRelay: the cloud relay as `parley relay` runs it: a node given
// its /p2p/ address fetches credentials, allocates with them, and the
// allocation shows on the metrics endpoint. Nothing of it outlives Close.
func TestCloudRelay(t *testing.T) {
	checkLeaks(t)
	c, err := Start(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.Addrs()
	if len(addrs) == 0 || !strings.Contains(addrs[0].String(), "/p2p/"+c.ID().String()) {
		t.Fatalf("Addrs %v lack /p2p/%s", addrs, c.ID())
	}
	info, err := peer.AddrInfoFromP2pAddr(addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	node, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.Connect(ctx, *info); err != nil {
		t.Fatal(err)
	}
	creds, err := turncreds.Fetch(ctx, node, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(creds.URLs[0], ":") // turn:HOST:PORT?transport=udp
	addr, transport, _ := strings.Cut(rest, "?")
	if transport != "transport=udp" {
		t.Fatalf("first URL %q is not UDP", creds.URLs[0])
	}
	allocateUDP(t, addr, creds.Username, creds.Password)

	res, err := http.Get("http://" + c.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"parley_turn_allocations 1", "parley_turn_credentials_issued_total 1", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestConfigContradictions(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no key", func(c *Config) { c.Key = nil }},
		{"credential secret set twice", func(c *Config) { c.Credentials.Secret = "another-secret-0123456789" }},
		{"credential port set by hand", func(c *Config) { c.Credentials.UDPPort = 3479 }},
		{"TTL beyond what the relay accepts", func(c *Config) {
			c.TURN.MaxCredentialTTL = time.Hour
			c.Credentials.TTL = 2 * time.Hour
		}},
		{"bad TURN config", func(c *Config) { c.TURN.Secret = "short" }},
		{"bad libp2p address", func(c *Config) { c.Listen = []string{"/ip4/127.0.0.1/tcp/notaport"} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			cfg := testConfig(t)
			tc.mod(&cfg)
			if c, err := Start(cfg); err == nil {
				c.Close()
				t.Fatal("Start accepted the config")
			}
		})
	}
}
