// Package cloudrelay is the cloud relay role (`parley relay`): the
// operator-run last-resort media path. It runs a TURN server
// (internal/turnrelay) and a libp2p host beside it that hands authenticated
// peers credentials for it (package turncreds) and relays their signalling
// circuits when every supernode is gone (CircuitLimits).
//
// It must never carry media over a libp2p circuit, never give credentials
// over a relayed connection, and never serve anything on the metrics
// address but /metrics.
package cloudrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/metrics"
	"github.com/parley-net/parley/internal/turnrelay"
)

// DefaultPort is the cloud relay's default libp2p port (TCP and QUIC),
// next to the supernode's 4100.
const DefaultPort = 4101

// CircuitLimits are the circuit relay v2 limits of the cloud relay's libp2p
// host: signalling only, as at a supernode. When every supernode that
// carried a call's signalling is gone, two NATed devices still reach each
// other through the cloud relay's circuit, so their call can restart ICE
// onto the cloud relay's TURN. A circuit may last an hour (a call) and
// carry 128 KiB each way; media never rides it.
var CircuitLimits = relay.Resources{
	Limit: &relay.RelayLimit{
		Duration: time.Hour,
		Data:     1 << 17,
	},
	ReservationTTL:         time.Hour,
	MaxReservations:        1024,
	MaxCircuits:            16,
	BufferSize:             2048,
	MaxReservationsPerPeer: 1,
	MaxReservationsPerIP:   8,
	MaxReservationsPerASN:  32,
}

// Config configures the operator-run cloud relay: a TURN Server plus
// a libp2p host that hands its credentials out over turncreds.Protocol.
type Config struct {
	// TURN configures the relay. Leave TURN.Registerer and TURN.Logger nil:
	// Start sets them from MetricsAddr and Logger.
	TURN turnrelay.Config
	// Credentials configures the credential protocol. Leave Secret, the
	// ports, Registerer, Logger and Now unset: Start takes them from
	// TURN.
	Credentials turnrelay.CredentialConfig
	// Key is the libp2p identity; required, and kept across restarts so
	// nodes can be given the relay's /p2p/ address.
	Key crypto.PrivKey
	// Listen are libp2p multiaddrs; nil means TCP and QUIC on
	// DefaultPort of every interface.
	Listen []string
	// MetricsAddr serves Prometheus metrics on http://ADDR/metrics; "" is
	// off.
	MetricsAddr string
	// Registerer receives the metrics (TURN, credentials, go-libp2p's);
	// nil means a registry of its own when MetricsAddr is set, else no
	// metrics. With MetricsAddr it must also be a prometheus.Gatherer,
	// which is what is served.
	Registerer prometheus.Registerer
	// Logger receives the relay's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Relay is a running cloud relay.
type Relay struct {
	TURN    *turnrelay.Server
	Creds   *turnrelay.CredentialService
	host    host.Host
	metrics *metrics.Server // nil: no metrics
}

// withDefaults checks cfg for contradictions and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	cc := &cfg.Credentials
	switch {
	case cfg.Key == nil:
		return cfg, errors.New("cloud relay: Key is required")
	case cfg.TURN.Registerer != nil || cfg.TURN.Logger != nil:
		return cfg, errors.New("cloud relay: TURN.Registerer and TURN.Logger are set by Start")
	case cc.Secret != "" || cc.UDPPort != 0 || cc.TCPPort != 0 || cc.TLSPort != 0 ||
		cc.Registerer != nil || cc.Logger != nil || cc.Now != nil:
		return cfg, errors.New("cloud relay: Credentials.Secret, ports, Registerer, Logger and Now come from TURN")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	maxTTL := cfg.TURN.MaxCredentialTTL
	if maxTTL == 0 {
		maxTTL = turnrelay.DefaultMaxCredentialTTL
	}
	ttl := cc.TTL
	if ttl == 0 {
		ttl = turnrelay.DefaultCredentialTTL
	}
	if ttl > maxTTL {
		return cfg, fmt.Errorf("cloud relay: credential TTL %v exceeds what the relay accepts (%v)", ttl, maxTTL)
	}
	if cfg.Listen == nil {
		cfg.Listen = []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
		}
	}
	return cfg, nil
}

// Start starts a cloud relay.
func Start(cfg Config) (_ *Relay, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	cc := &cfg.Credentials
	c := &Relay{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	reg, gather, err := metrics.Registry(cfg.Registerer, cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("cloud relay: %w", err)
	}
	if reg != nil {
		cfg.TURN.Registerer = reg
		cc.Registerer = reg
	}
	cfg.TURN.Logger = cfg.Logger.With("service", "turn")
	if c.TURN, err = turnrelay.New(cfg.TURN); err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(100, 400, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key),
		libp2p.ListenAddrStrings(cfg.Listen...),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(), // credentials go over direct connections only
		// Signalling between devices that lost their supernodes: the
		// relay is public by its operator's word, like a supernode.
		libp2p.ForceReachabilityPublic(),
		libp2p.EnableRelayService(relay.WithResources(CircuitLimits)),
	}
	if reg != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(reg))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if c.host, err = libp2p.New(opts...); err != nil {
		cm.Close() // the host closes it, but there is no host
		return nil, fmt.Errorf("cloud relay libp2p host: %w", err)
	}
	own := c.TURN.CredentialConfig()
	cc.Secret, cc.Now, cc.UDPPort, cc.TCPPort, cc.TLSPort = own.Secret, own.Now, own.UDPPort, own.TCPPort, own.TLSPort
	cc.Logger = cfg.Logger.With("service", "turn-credentials")
	if c.Creds, err = turnrelay.ServeCredentials(c.host, *cc); err != nil {
		return nil, err
	}
	if gather != nil {
		if c.metrics, err = metrics.Serve(cfg.MetricsAddr, gather); err != nil {
			return nil, err
		}
	}
	cfg.Logger.Info("cloud relay started", "peer", c.host.ID(), "addrs", c.host.Addrs())
	return c, nil
}

// ID is the relay's libp2p peer ID.
func (c *Relay) ID() peer.ID { return c.host.ID() }

// Host is the relay's libp2p host.
func (c *Relay) Host() host.Host { return c.host }

// Addrs are the relay's full libp2p multiaddrs, /p2p/<id> included: what
// nodes are given to fetch credentials from.
func (c *Relay) Addrs() []ma.Multiaddr {
	as, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: c.host.ID(), Addrs: c.host.Addrs()})
	return as
}

// MetricsAddr is where metrics are served, or nil.
func (c *Relay) MetricsAddr() net.Addr { return c.metrics.Addr() }

// Close stops everything the relay runs.
func (c *Relay) Close() error {
	var errs []error
	errs = append(errs, c.metrics.Close())
	if c.Creds != nil {
		c.Creds.Close()
	}
	if c.host != nil {
		errs = append(errs, c.host.Close())
	}
	if c.TURN != nil {
		errs = append(errs, c.TURN.Close())
	}
	return errors.Join(errs...)
}
