package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node/netcheck"
	"github.com/parley-net/parley/turncreds"
)

// Netcheck measures this device's network against its connected
// supernodes and its cloud relays: their STUN servers (and the UDP ports of
// their TURN servers), a TURN allocation on each of their relay URLs, and a
// libp2p round trip to each.
func (n *Node) Netcheck(ctx context.Context) (*netcheck.Report, error) {
	var targets []netcheck.Target
	var mu sync.Mutex
	var wg sync.WaitGroup
	add := func(t netcheck.Target) {
		mu.Lock()
		targets = append(targets, t)
		mu.Unlock()
	}
	for _, sn := range n.cfg.Bootstrap {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := netcheck.Target{Tier: TierSupernode, Name: shortPeer(sn.ID.String()), Ping: n.pinger(sn.ID)}
			if n.host.Network().Connectedness(sn.ID) != network.Connected {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := n.host.Connect(cctx, sn)
				cancel()
				if err != nil {
					t.TURNError = "not reachable: " + ErrorText(err)
					t.Ping = nil
					add(t)
					return
				}
			}
			if urls, err := discovery.QueryServices(ctx, n.host, sn.ID); err == nil {
				t.STUN = urls
			}
			if srv, err := n.turnServer(ctx, sn.ID, false); err == nil {
				t.TURN, t.Username, t.Password = srv.URLs, srv.Username, fmt.Sprint(srv.Credential)
			} else {
				t.TURNError = turnError(err)
			}
			add(t)
		}()
	}
	for _, r := range n.cfg.CloudRelays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := netcheck.Target{Tier: TierCloud, Name: shortPeer(r.ID.String()), Ping: n.pinger(r.ID)}
			if srv, err := n.cloudRelay(ctx, r, false); err == nil {
				t.TURN, t.Username, t.Password = srv.URLs, srv.Username, fmt.Sprint(srv.Credential)
			} else {
				t.TURNError = "no TURN credentials: " + ErrorText(err)
				t.Ping = nil
			}
			add(t)
		}()
	}
	wg.Wait()
	// Supernodes before cloud relays, each in a stable order.
	slices.SortFunc(targets, func(a, b netcheck.Target) int {
		return cmp.Or(cmp.Compare(b.Tier, a.Tier), cmp.Compare(a.Name, b.Name))
	})
	return netcheck.Run(ctx, netcheck.Config{Targets: targets, Logger: n.log.With("subsystem", "netcheck")})
}

// pinger measures a libp2p round trip to p.
func (n *Node) pinger(p peer.ID) func(context.Context) (time.Duration, error) {
	return hostPinger(n.host, p)
}

func hostPinger(h host.Host, p peer.ID) func(context.Context) (time.Duration, error) {
	return func(ctx context.Context) (time.Duration, error) {
		rtt, _, err := pingOnce(ctx, h, p)
		return rtt, err
	}
}

// NetcheckWithout measures the network without a daemon: a throwaway
// libp2p host (a fresh key, no DHT, nothing published) connects to the
// supernodes and cloud relays given, asks them for their STUN URLs and TURN
// credentials, and runs the same check as Node.Netcheck.
func NetcheckWithout(ctx context.Context, supernodes, cloud []peer.AddrInfo, log *slog.Logger) (*netcheck.Report, error) {
	if len(supernodes)+len(cloud) == 0 {
		return nil, netcheck.ErrNoTargets
	}
	if log == nil {
		log = slog.Default()
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"),
		libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	defer h.Close()
	targets := make([]netcheck.Target, 0, len(supernodes)+len(cloud))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, pi := range append(append([]peer.AddrInfo(nil), supernodes...), cloud...) {
		tier := TierSupernode
		if i >= len(supernodes) {
			tier = TierCloud
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := netcheck.Target{Tier: tier, Name: shortPeer(pi.ID.String())}
			defer func() { mu.Lock(); targets = append(targets, t); mu.Unlock() }()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := h.Connect(cctx, pi); err != nil {
				t.TURNError = "not reachable: " + ErrorText(err)
				return
			}
			t.Ping = hostPinger(h, pi.ID)
			if tier == TierSupernode {
				if urls, err := discovery.QueryServices(cctx, h, pi.ID); err == nil {
					t.STUN = urls
				}
			}
			c, err := turncreds.Fetch(cctx, h, pi.ID)
			if err != nil {
				t.TURNError = turnError(err)
				return
			}
			t.TURN, t.Username, t.Password = c.URLs, c.Username, c.Password
		}()
	}
	wg.Wait()
	slices.SortFunc(targets, func(a, b netcheck.Target) int {
		return cmp.Or(cmp.Compare(b.Tier, a.Tier), cmp.Compare(a.Name, b.Name))
	})
	return netcheck.Run(ctx, netcheck.Config{Targets: targets, Logger: log})
}

// turnError says why a server gave no TURN credentials.
func turnError(err error) string {
	if strings.Contains(err.Error(), "protocols not supported") {
		return "offers no TURN relay"
	}
	return "no TURN credentials: " + ErrorText(err)
}

// ErrNoDeviceOnline is returned by Ping when no device of the handle
// answered.
var ErrNoDeviceOnline = errors.New("no device of the handle answered")

// PingResult is one probe of one device.
type PingResult struct {
	Device string `json:"device"`
	// Tier is "direct", or "relay" while only a circuit through a
	// supernode (Via) reaches the device.
	Tier string `json:"tier"`
	Via  string `json:"via,omitempty"` // the relaying peer's ID
	// ViaTier is what the relaying peer is: "supernode" or "cloud" (a
	// cloud relay carries signalling when no supernode can).
	ViaTier string `json:"via_tier,omitempty"`
	// Transport is the connection's: "tcp", "quic-v1" (of the direct
	// connection, or of this side's connection to the relay).
	Transport string  `json:"transport"`
	Remote    string  `json:"remote"` // the connection's remote multiaddr
	RTTMS     float64 `json:"rtt_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// Ping sends one libp2p ping (/ipfs/ping/1.0.0) to every device of handle,
// reaching each as a message would (directly, else through a supernode's
// circuit, which hole punching then tries to upgrade), and says over which
// connection each answered. Repeated, it shows a relayed device become
// direct once hole punching succeeds.
func (n *Node) Ping(ctx context.Context, handle string) ([]PingResult, error) {
	rec, err := n.resolve(ctx, handle, false)
	if err != nil {
		return nil, err
	}
	var out []PingResult
	for _, d := range rec.Devices {
		id, err := peer.Decode(d.PeerID)
		if err != nil || id == n.ID() {
			continue
		}
		out = append(out, PingResult{Device: d.PeerID})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s has no other device", ErrNoDevice, handle)
	}
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &out[i]
			id, _ := peer.Decode(r.Device)
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := n.connect(pctx, id); err != nil {
				r.Error = ErrorText(err)
				return
			}
			rtt, c, err := pingOnce(pctx, n.host, id)
			if err != nil {
				r.Error = ErrorText(err)
				return
			}
			r.RTTMS = float64(rtt.Microseconds()) / 1000
			r.Tier, r.Via, r.Transport, r.Remote = connTier(c.RemoteMultiaddr())
			r.ViaTier = n.relayTier(r.Via)
		}()
	}
	wg.Wait()
	for _, r := range out {
		if r.Error == "" {
			return out, nil
		}
	}
	return out, fmt.Errorf("%w: %s (%s)", ErrNoDeviceOnline, handle, out[0].Error)
}

// relayTier says whether via is one of the node's supernodes or cloud
// relays; "" when it is neither (or empty).
func (n *Node) relayTier(via string) string {
	for _, sn := range n.cfg.Bootstrap {
		if sn.ID.String() == via {
			return TierSupernode
		}
	}
	for _, r := range n.cfg.CloudRelays {
		if r.ID.String() == via {
			return TierCloud
		}
	}
	return ""
}

// pingOnce is one /ipfs/ping/1.0.0 exchange (32 random bytes echoed) on
// the connection the host picks (a direct one when there is one), and that
// connection.
func pingOnce(ctx context.Context, h host.Host, p peer.ID) (time.Duration, network.Conn, error) {
	s, err := h.NewStream(network.WithAllowLimitedConn(ctx, "parley ping"), p, ping.ID)
	if err != nil {
		return 0, nil, fmt.Errorf("ping %s: %w", p.ShortString(), err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	out, in := make([]byte, ping.PingSize), make([]byte, ping.PingSize)
	rand.Read(out)
	start := time.Now()
	if _, err := s.Write(out); err != nil {
		s.Reset()
		return 0, nil, fmt.Errorf("ping %s: %w", p.ShortString(), err)
	}
	if _, err := io.ReadFull(s, in); err != nil {
		s.Reset()
		return 0, nil, fmt.Errorf("ping %s: no answer: %w", p.ShortString(), err)
	}
	rtt := time.Since(start)
	if !bytes.Equal(in, out) {
		s.Reset()
		return 0, nil, fmt.Errorf("ping %s: the answer differs from what was sent", p.ShortString())
	}
	return rtt, s.Conn(), nil
}

// connTier names a connection by its remote multiaddr: "direct", or
// "relay" with the relay's peer ID; its transport; and the address.
func connTier(m ma.Multiaddr) (tier, via, transport, remote string) {
	tier, remote = TierDirect, m.String()
	for _, c := range m {
		switch c.Protocol().Code {
		case ma.P_TCP:
			transport = "tcp"
		case ma.P_QUIC_V1:
			transport = "quic-v1"
		case ma.P_WEBTRANSPORT, ma.P_WEBRTC_DIRECT:
			transport = c.Protocol().Name
		case ma.P_P2P:
			if tier == TierDirect {
				via = c.Value()
			}
		case ma.P_CIRCUIT:
			tier = "relay"
		}
	}
	if tier == TierDirect {
		via = ""
	}
	return tier, via, transport, remote
}
