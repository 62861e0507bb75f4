package turnrelay

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func cloudConfig(t *testing.T) CloudConfig {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return CloudConfig{
		TURN: Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{loopback4},
			Secret: testSecret, AllowCIDRs: allowLoop},
		Key:         key,
		Listen:      []string{"/ip4/127.0.0.1/tcp/0"},
		MetricsAddr: "127.0.0.1:0",
		Logger:      testLogger(),
	}
}

// TestCloudRelay: the cloud relay as `parley relay` runs it: a node given
// its /p2p/ address fetches credentials, allocates with them, and the
// allocation shows on the metrics endpoint.
func TestCloudRelay(t *testing.T) {
	checkGoroutines(t)
	c, err := StartCloud(cloudConfig(t))
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
	node := newHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.Connect(ctx, *info); err != nil {
		t.Fatal(err)
	}
	creds, err := FetchCredentials(ctx, node, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	addr, transport := hostPort(t, creds.URLs[0])
	allocate(t, turnClient(t, transport, addr, creds.Username, creds.Password))

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

func TestCloudConfigContradictions(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*CloudConfig)
	}{
		{"no key", func(c *CloudConfig) { c.Key = nil }},
		{"credential secret set twice", func(c *CloudConfig) { c.Credentials.Secret = "another-secret-0123456789" }},
		{"credential port set by hand", func(c *CloudConfig) { c.Credentials.UDPPort = 3479 }},
		{"TTL beyond what the relay accepts", func(c *CloudConfig) {
			c.TURN.MaxCredentialTTL = time.Hour
			c.Credentials.TTL = 2 * time.Hour
		}},
		{"bad TURN config", func(c *CloudConfig) { c.TURN.Secret = "short" }},
		{"bad libp2p address", func(c *CloudConfig) { c.Listen = []string{"/ip4/127.0.0.1/tcp/notaport"} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			cfg := cloudConfig(t)
			tc.mod(&cfg)
			if c, err := StartCloud(cfg); err == nil {
				c.Close()
				t.Fatal("StartCloud accepted the config")
			}
		})
	}
}
