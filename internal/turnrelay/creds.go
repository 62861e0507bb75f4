package turnrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/parley-net/parley/internal/metrics"
	"github.com/parley-net/parley/internal/turnrest"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/turncreds"
)

const maxLimiterEntries = 10000 // keys a limiterSet holds

// Credential service defaults for the zero values of CredentialConfig.
const (
	DefaultCredentialTTL = 6 * time.Hour
	DefaultPeerRate      = rate.Limit(1.0 / 30) // a credential every 30 s per peer...
	DefaultPeerBurst     = 5                    // ...after 5 at once
	DefaultIPRate        = rate.Limit(2)        // per client IP
	DefaultIPBurst       = 40
)

// CredentialConfig configures a CredentialService.
type CredentialConfig struct {
	// Secret is the relay's TURN REST shared secret; required, at least
	// MinSecretLen bytes.
	Secret string
	// TTL is the lifetime of issued credentials; 0 means
	// DefaultCredentialTTL. At most 7 days; keep it within the relay's
	// MaxCredentialTTL.
	TTL time.Duration
	// UDPPort, TCPPort and TLSPort are the relay's ports to offer as
	// turn:…?transport=udp, turn:…?transport=tcp and turns:…?transport=tcp;
	// 0 offers none. At least one is required.
	UDPPort, TCPPort, TLSPort int
	// PublicHost is the host put in the URLs (a DNS name for turns:, whose
	// certificate must match it); "" means the IP address the peer reached
	// this host at (a host listening on 0.0.0.0 answers each peer with the
	// address that peer used; over QUIC, which does not report it, with the
	// address the kernel routes replies to that peer from). Set it when the
	// host is behind a NAT.
	PublicHost string
	// PeerRate and PeerBurst limit requests per peer ID; 0 means
	// DefaultPeerRate and DefaultPeerBurst.
	PeerRate  rate.Limit
	PeerBurst int
	// IPRate and IPBurst limit requests per client IP address; 0 means
	// DefaultIPRate and DefaultIPBurst.
	IPRate  rate.Limit
	IPBurst int
	// Authorize, if set, must return nil for a peer to get credentials;
	// nil lets every peer have them (each is authenticated by its key).
	Authorize func(peer.ID) error
	// Registerer receives the service's metrics; nil means none.
	Registerer prometheus.Registerer
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for credential expiry and rate limits; nil means
	// time.Now.
	Now func() time.Time
}

// Why a credential request was refused (a metric label).
const (
	credRefusedRate         = "rate"
	credRefusedUnauthorized = "unauthorized"
	credRefusedRelayed      = "relayed"
	credRefusedNoAddress    = "no_address"
)

// CredentialService answers turncreds.Protocol on a libp2p host.
type CredentialService struct {
	cfg    CredentialConfig
	h      host.Host
	peers  *limiterSet[peer.ID]
	ips    *limiterSet[netip.Addr]
	issued atomic.Uint64
	unreg  func()

	refusedMu sync.Mutex
	refused   map[string]prometheus.Counter
}

// ServeCredentials starts answering turncreds.Protocol on h.
func ServeCredentials(h host.Host, cfg CredentialConfig) (*CredentialService, error) {
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("TURN credential service: shared secret of %d bytes is too short (at least %d)", len(cfg.Secret), MinSecretLen)
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultCredentialTTL
	case cfg.TTL < time.Minute || cfg.TTL > turncreds.MaxTTL:
		return nil, fmt.Errorf("TURN credential service: TTL %v outside 1m to %v", cfg.TTL, turncreds.MaxTTL)
	}
	for _, p := range []int{cfg.UDPPort, cfg.TCPPort, cfg.TLSPort} {
		if p < 0 || p > 65535 {
			return nil, fmt.Errorf("TURN credential service: port %d", p)
		}
	}
	if cfg.UDPPort == 0 && cfg.TCPPort == 0 && cfg.TLSPort == 0 {
		return nil, errors.New("TURN credential service: no relay port to offer")
	}
	if cfg.PublicHost != "" {
		if err := turncreds.CheckURL("turn:" + net.JoinHostPort(cfg.PublicHost, "1")); err != nil {
			return nil, fmt.Errorf("TURN credential service: PublicHost %q is not a host name or IP address", cfg.PublicHost)
		}
	}
	if cfg.PeerRate < 0 || cfg.PeerBurst < 0 || cfg.IPRate < 0 || cfg.IPBurst < 0 {
		return nil, errors.New("TURN credential service: negative rate limit")
	}
	if cfg.PeerRate == 0 {
		cfg.PeerRate = DefaultPeerRate
	}
	if cfg.PeerBurst == 0 {
		cfg.PeerBurst = DefaultPeerBurst
	}
	if cfg.IPRate == 0 {
		cfg.IPRate = DefaultIPRate
	}
	if cfg.IPBurst == 0 {
		cfg.IPBurst = DefaultIPBurst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cs := &CredentialService{cfg: cfg, h: h,
		peers: newLimiterSet[peer.ID](cfg.PeerRate, cfg.PeerBurst),
		ips:   newLimiterSet[netip.Addr](cfg.IPRate, cfg.IPBurst),
	}
	if cfg.Registerer != nil {
		var err error
		if cs.unreg, err = cs.registerMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	h.SetStreamHandler(turncreds.Protocol, cs.handle)
	return cs, nil
}

// Close stops answering the protocol.
func (cs *CredentialService) Close() {
	cs.h.RemoveStreamHandler(turncreds.Protocol)
	if cs.unreg != nil {
		cs.unreg()
	}
}

// Issued is how many credentials the service handed out.
func (cs *CredentialService) Issued() uint64 { return cs.issued.Load() }

func (cs *CredentialService) registerMetrics(reg prometheus.Registerer) (func(), error) {
	cs.refused = map[string]prometheus.Counter{}
	cols := []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "parley_turn_credentials_issued_total", Help: "TURN credentials handed to libp2p peers.",
	}, func() float64 { return float64(cs.issued.Load()) })}
	for _, r := range []string{credRefusedRate, credRefusedUnauthorized, credRefusedRelayed, credRefusedNoAddress} {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_turn_credential_refusals_total",
			Help: "TURN credential requests refused, by reason.", ConstLabels: prometheus.Labels{"reason": r}})
		cs.refused[r] = c
		cols = append(cols, c)
	}
	return metrics.RegisterAll(reg, cols)
}

func (cs *CredentialService) handle(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(turncreds.StreamTimeout))
	f := cs.answer(s.Conn().RemotePeer(), s.Conn().RemoteMultiaddr(), s.Conn().LocalMultiaddr())
	if err := wire.WriteJSON(s, f, turncreds.MaxFrame); err != nil {
		cs.cfg.Logger.Debug("TURN credentials: write", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
	}
}

func (cs *CredentialService) answer(p peer.ID, remote, local ma.Multiaddr) *turncreds.Frame {
	refuse := func(reason, msg string) *turncreds.Frame {
		if c := cs.refused[reason]; c != nil {
			c.Inc()
		}
		cs.cfg.Logger.Debug("TURN credentials refused", "peer", p, "remote", remote, "reason", reason)
		return &turncreds.Frame{Error: msg}
	}
	if isCircuit(remote) {
		return refuse(credRefusedRelayed, "credentials are only given over a direct connection")
	}
	rip, ok := multiaddrIP(remote)
	if !ok {
		return refuse(credRefusedRelayed, "credentials are only given over a direct IP connection")
	}
	now := cs.cfg.Now()
	if !cs.ips.allow(rip, now) {
		return refuse(credRefusedRate, "rate limited: too many requests from your IP address; retry later")
	}
	if !cs.peers.allow(p, now) {
		return refuse(credRefusedRate, "rate limited: too many requests from your peer ID; retry later")
	}
	if cs.cfg.Authorize != nil {
		if err := cs.cfg.Authorize(p); err != nil {
			return refuse(credRefusedUnauthorized, "not authorized for this relay")
		}
	}
	hostname := cs.cfg.PublicHost
	if hostname == "" {
		lip, ok := multiaddrIP(local)
		if !ok || lip.IsUnspecified() {
			// A wildcard listener that does not report the packet's
			// destination (QUIC here): take the address the kernel answers
			// this client from, which is the one it reached us at unless a
			// NAT sits in front (then PublicHost is needed anyway).
			lip, ok = routeSource(rip)
		}
		if !ok || lip.IsUnspecified() {
			return refuse(credRefusedNoAddress, "relay does not know its own address; ask the operator to set a public host")
		}
		hostname = lip.String()
	}
	c, err := turnrest.Issue(cs.cfg.Secret, p.String(), cs.cfg.TTL, now)
	if err != nil {
		return refuse(credRefusedUnauthorized, "cannot issue credentials for this peer ID")
	}
	f := &turncreds.Frame{Username: c.Username, Credential: c.Password, TTLSeconds: int64(cs.cfg.TTL / time.Second)}
	for _, u := range []struct {
		scheme, transport string
		port              int
	}{{"turn", "udp", cs.cfg.UDPPort}, {"turn", "tcp", cs.cfg.TCPPort}, {"turns", "tcp", cs.cfg.TLSPort}} {
		if u.port != 0 {
			f.URLs = append(f.URLs, u.scheme+":"+net.JoinHostPort(hostname, strconv.Itoa(u.port))+"?transport="+u.transport)
		}
	}
	cs.issued.Add(1)
	return f
}

// routeSource is the local address the kernel would send to dst from. It
// sends nothing: connecting a UDP socket only looks up the route.
var routeSource = func(dst netip.Addr) (netip.Addr, bool) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, false
	}
	defer c.Close()
	a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return a, a.IsValid()
}

func isCircuit(m ma.Multiaddr) bool {
	_, err := m.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func multiaddrIP(m ma.Multiaddr) (netip.Addr, bool) {
	if m == nil {
		return netip.Addr{}, false
	}
	ip, err := manet.ToIP(m)
	if err != nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// limiterSet is a token bucket per key, holding at most maxLimiterEntries
// keys. When full it forgets the idle ones (full buckets, which behave like
// new ones); if none is idle it refuses new keys rather than forgetting
// someone who is being limited.
type limiterSet[K comparable] struct {
	r  rate.Limit
	b  int
	mu sync.Mutex
	m  map[K]*rate.Limiter
}

func newLimiterSet[K comparable](r rate.Limit, b int) *limiterSet[K] {
	return &limiterSet[K]{r: r, b: b, m: map[K]*rate.Limiter{}}
}

func (ls *limiterSet[K]) allow(k K, now time.Time) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l, ok := ls.m[k]
	if !ok {
		if len(ls.m) >= maxLimiterEntries {
			for k2, l2 := range ls.m {
				if l2.TokensAt(now) >= float64(ls.b) {
					delete(ls.m, k2)
				}
			}
			if len(ls.m) >= maxLimiterEntries {
				return false
			}
		}
		l = rate.NewLimiter(ls.r, ls.b)
		ls.m[k] = l
	}
	return l.AllowN(now, 1)
}
