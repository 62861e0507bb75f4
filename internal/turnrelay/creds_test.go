package turnrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/parley-net/parley/internal/turnrest"
	"github.com/parley-net/parley/turncreds"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t *testing.T, from, to host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func fetch(t *testing.T, h host.Host, relay peer.ID) (*turncreds.Credentials, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return turncreds.Fetch(ctx, h, relay)
}

// hostPort turns "turn:HOST:PORT?transport=X" into "HOST:PORT" and X.
func hostPort(t *testing.T, url string) (string, string) {
	t.Helper()
	_, rest, _ := strings.Cut(url, ":")
	hp, q, _ := strings.Cut(rest, "?")
	return hp, strings.TrimPrefix(q, "transport=")
}

// TestCredentialProtocol: a libp2p peer fetches credentials over
// /parley/turn/1.0.0; they name the relay at the address the peer reached
// the server at, carry the peer's ID, and work for an Allocate over UDP and
// TCP; the (N+1)th request within the rate window gets an error frame.
func TestCredentialProtocol(t *testing.T) {
	srv := startServer(t, nil)
	server, client := newHost(t), newHost(t)
	reg := prometheus.NewRegistry()
	const burst = 3
	cs, err := ServeCredentials(server, CredentialConfig{
		Secret: testSecret, UDPPort: srv.UDPAddr().Port, TCPPort: srv.TCPAddr().Port,
		PeerBurst: burst, PeerRate: rate.Every(time.Hour), Registerer: reg, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	connect(t, client, server)

	creds, err := fetch(t, client, server.ID())
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	wantURLs := []string{
		fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", srv.UDPAddr().Port),
		fmt.Sprintf("turn:127.0.0.1:%d?transport=tcp", srv.TCPAddr().Port),
	}
	if !reflect.DeepEqual(creds.URLs, wantURLs) {
		t.Fatalf("URLs %q, want %q", creds.URLs, wantURLs)
	}
	exp, id, err := turnrest.ParseUsername(creds.Username)
	if err != nil || id != client.ID().String() {
		t.Fatalf("username %q: id %q, %v; want the client's peer ID", creds.Username, id, err)
	}
	if d := time.Until(exp); d < DefaultCredentialTTL-time.Minute || d > DefaultCredentialTTL+time.Second {
		t.Fatalf("credential expires in %v, want about %v", d, DefaultCredentialTTL)
	}
	if d := creds.Expires.Sub(exp); d < -time.Minute || d > time.Minute {
		t.Fatalf("Expires %v disagrees with the username's %v", creds.Expires, exp)
	}
	for _, u := range creds.URLs {
		addr, transport := hostPort(t, u)
		rc := allocate(t, turnClient(t, transport, addr, creds.Username, creds.Password))
		if rc.LocalAddr() == nil {
			t.Fatalf("%s: no relayed address", u)
		}
	}
	if got := srv.Stats().Allocations; got != 2 {
		t.Fatalf("allocations with fetched credentials: %d, want 2", got)
	}

	for i := 2; i <= burst; i++ {
		if _, err := fetch(t, client, server.ID()); err != nil {
			t.Fatalf("request %d of %d: %v", i, burst, err)
		}
	}
	_, err = fetch(t, client, server.ID())
	if !errors.Is(err, turncreds.ErrRefused) || !strings.Contains(err.Error(), "rate limited") {
		t.Fatalf("request %d: err %v, want a rate-limit refusal", burst+1, err)
	}
	if got := metric(t, reg, "parley_turn_credentials_issued_total", nil); got != burst {
		t.Errorf("issued metric %v, want %d", got, burst)
	}
	if got := metric(t, reg, "parley_turn_credential_refusals_total", map[string]string{"reason": "rate"}); got != 1 {
		t.Errorf("rate refusals metric %v, want 1", got)
	}
}

// TestCredentialLimitsPerIPAndAuthorize: two peers on one IP share the
// per-IP budget, and Authorize can refuse a peer.
func TestCredentialLimitsPerIPAndAuthorize(t *testing.T) {
	server, a, b, banned := newHost(t), newHost(t), newHost(t), newHost(t)
	cs, err := ServeCredentials(server, CredentialConfig{
		Secret: testSecret, UDPPort: 3479, IPBurst: 3, IPRate: rate.Every(time.Hour), Logger: testLogger(),
		Authorize: func(p peer.ID) error {
			if p == banned.ID() {
				return errors.New("banned")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for _, h := range []host.Host{a, b, banned} {
		connect(t, h, server)
	}
	if _, err := fetch(t, banned, server.ID()); !errors.Is(err, turncreds.ErrRefused) || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("banned peer: %v", err)
	}
	for i, h := range []host.Host{a, b} { // the banned peer's request spent one
		if _, err := fetch(t, h, server.ID()); err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
	}
	if _, err := fetch(t, b, server.ID()); !errors.Is(err, turncreds.ErrRefused) || !strings.Contains(err.Error(), "IP address") {
		t.Fatalf("fourth request from the IP: %v, want a per-IP refusal", err)
	}
	if cs.Issued() != 2 {
		t.Fatalf("Issued = %d, want 2", cs.Issued())
	}
}

// TestCredentialAnswerAddresses: which host the URLs name, from the
// connection's addresses and the configuration.
func TestCredentialAnswerAddresses(t *testing.T) {
	if a, ok := routeSource(loopback4); !ok || a != loopback4 {
		t.Fatalf("route source toward 127.0.0.1 = %v, %v", a, ok)
	}
	p, _ := peer.Decode("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
	m := func(s string) ma.Multiaddr { return ma.StringCast(s) }
	tests := []struct {
		name, public  string
		remote, local string
		wantURL       string
		wantErr       string
	}{
		{"direct IPv4", "", "/ip4/198.51.100.9/tcp/5000", "/ip4/203.0.113.7/tcp/4101", "turn:203.0.113.7:3479?transport=udp", ""},
		{"direct QUIC IPv6", "", "/ip6/2001:db8::9/udp/5000/quic-v1", "/ip6/2001:db8::7/udp/4101/quic-v1", "turn:[2001:db8::7]:3479?transport=udp", ""},
		{"configured host", "relay.example.org", "/ip4/198.51.100.9/tcp/5000", "/ip4/10.0.0.7/tcp/4101", "turn:relay.example.org:3479?transport=udp", ""},
		{"wildcard local address: the route toward the client", "", "/ip4/127.0.0.1/udp/5000/quic-v1", "/ip4/0.0.0.0/udp/4101/quic-v1", "turn:127.0.0.1:3479?transport=udp", ""},
		{"no route toward the client", "", "/ip4/198.51.100.9/tcp/5000", "/ip4/0.0.0.0/tcp/4101", "", "own address"},
		{"through a circuit", "", "/ip4/198.51.100.1/tcp/4100/p2p/" + p.String() + "/p2p-circuit", "/p2p-circuit", "", "direct connection"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func(orig func(netip.Addr) (netip.Addr, bool)) { routeSource = orig }(routeSource)
			routeSource = func(dst netip.Addr) (netip.Addr, bool) {
				if dst.IsLoopback() { // the only route a test may rely on
					return dst, true
				}
				return netip.Addr{}, false
			}
			cs := &CredentialService{cfg: CredentialConfig{Secret: testSecret, TTL: time.Hour, UDPPort: 3479,
				PublicHost: tc.public, Logger: testLogger(), Now: time.Now},
				peers: newLimiterSet[peer.ID](1, 10), ips: newLimiterSet[netip.Addr](1, 10)}
			f := cs.answer(p, m(tc.remote), m(tc.local))
			if tc.wantErr != "" {
				if !strings.Contains(f.Error, tc.wantErr) || f.Username != "" {
					t.Fatalf("frame %+v, want error containing %q", f, tc.wantErr)
				}
				return
			}
			if f.Error != "" || len(f.URLs) != 1 || f.URLs[0] != tc.wantURL {
				t.Fatalf("frame %+v, want URL %q", f, tc.wantURL)
			}
			b, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := turncreds.DecodeFrame(b); err != nil {
				t.Fatalf("the server's own frame does not validate: %v", err)
			}
		})
	}
}
