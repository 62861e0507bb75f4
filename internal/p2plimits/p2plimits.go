// Package p2plimits builds the go-libp2p resource manager parley's hosts
// run with: the library's scaled defaults, with every peer's streams held
// well below the host's and connections capped per IP address and per
// subnet, so that one attacker, however many identities it makes, cannot
// take every stream or connection a device or supernode has.
//
// Limits (see Config for defaults): connections per IPv4 address and per
// IPv6 /56, per IPv4 /24 and per IPv6 /48; streams per peer (inbound and in
// total). Loopback addresses keep go-libp2p's own exemption from the
// per-IP connection limits (a local process is not a remote attacker, and
// in-process tests run every host on 127.0.0.1); application limits such as
// the node's chat slots apply to loopback too.
//
// It must never raise a per-peer stream limit above go-libp2p's scaled
// default, nor touch the host-wide limits except by Config.HostConns: it
// only narrows what one peer or one address may take. (A caller may set
// ConnsPerIP above go-libp2p's 8.) go-libp2p scales the host-wide limits
// to memory, not to a role: on a 24 GB machine it accepts 252 inbound
// connections in all, so a supernode that is to hold thousands of devices
// sets HostConns.
package p2plimits

import (
	"fmt"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultConnsPerIP            = 8   // go-libp2p's own default per IPv4 address
	DefaultConnsPerSubnet        = 64  // per IPv4 /24 and IPv6 /48
	DefaultStreamsPerPeer        = 128 // all directions
	DefaultStreamsInboundPerPeer = 64
)

// Config narrows the resource manager's limits. Every zero field means its
// default.
type Config struct {
	// ConnsPerIP caps connections from one IPv4 address or IPv6 /56; 0
	// means DefaultConnsPerIP.
	ConnsPerIP int
	// ConnsPerSubnet caps connections from one IPv4 /24 or IPv6 /48; 0
	// means DefaultConnsPerSubnet.
	ConnsPerSubnet int
	// StreamsPerPeer caps one peer's streams, inbound and outbound; 0 means
	// DefaultStreamsPerPeer.
	StreamsPerPeer int
	// StreamsInboundPerPeer caps the streams one peer may open to us; 0
	// means DefaultStreamsInboundPerPeer.
	StreamsInboundPerPeer int
	// HostConns, when positive, is the host's inbound connection limit
	// (a supernode's device capacity): the host-wide limits become
	// HostConns inbound connections, HostConns+256 in all, a file
	// descriptor each plus 1,024, 8 streams a connection, and 1/16 of
	// them mid-handshake (the transient scope); 0 means go-libp2p's
	// scaled defaults.
	HostConns int
	// Registerer, if set, receives the resource manager's metrics
	// (libp2p_rcmgr_*: connections, streams, memory, blocked resources);
	// nil means none.
	Registerer prometheus.Registerer
}

func (c *Config) defaults() error {
	for _, v := range []*int{&c.HostConns, &c.ConnsPerIP, &c.ConnsPerSubnet, &c.StreamsPerPeer, &c.StreamsInboundPerPeer} {
		if *v < 0 {
			return fmt.Errorf("p2p limits: %d: use a positive limit or 0 for the default", *v)
		}
	}
	if c.ConnsPerIP == 0 {
		c.ConnsPerIP = DefaultConnsPerIP
	}
	if c.ConnsPerSubnet == 0 {
		c.ConnsPerSubnet = DefaultConnsPerSubnet
	}
	if c.StreamsPerPeer == 0 {
		c.StreamsPerPeer = DefaultStreamsPerPeer
	}
	if c.StreamsInboundPerPeer == 0 {
		c.StreamsInboundPerPeer = DefaultStreamsInboundPerPeer
	}
	if c.StreamsInboundPerPeer > c.StreamsPerPeer {
		return fmt.Errorf("p2p limits: %d inbound streams per peer is more than %d in total", c.StreamsInboundPerPeer, c.StreamsPerPeer)
	}
	return nil
}

// Limits is the concrete limit set for cfg on this machine (scaled to its
// memory and file descriptors, as go-libp2p does).
func Limits(cfg Config) (rcmgr.ConcreteLimitConfig, error) {
	if err := cfg.defaults(); err != nil {
		return rcmgr.ConcreteLimitConfig{}, err
	}
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	def := scaling.AutoScale()
	peer := rcmgr.ResourceLimits{
		Streams:         rcmgr.LimitVal(cfg.StreamsPerPeer),
		StreamsInbound:  rcmgr.LimitVal(cfg.StreamsInboundPerPeer),
		StreamsOutbound: rcmgr.LimitVal(cfg.StreamsPerPeer),
	}
	// Never above the host's own defaults.
	d := def.ToPartialLimitConfig().PeerDefault
	if d.Streams != rcmgr.DefaultLimit && d.Streams != rcmgr.Unlimited && int(d.Streams) < cfg.StreamsPerPeer {
		peer.Streams = d.Streams
	}
	if d.StreamsInbound != rcmgr.DefaultLimit && d.StreamsInbound != rcmgr.Unlimited && int(d.StreamsInbound) < cfg.StreamsInboundPerPeer {
		peer.StreamsInbound = d.StreamsInbound
	}
	part := rcmgr.PartialLimitConfig{PeerDefault: peer}
	if n := cfg.HostConns; n > 0 {
		part.System = rcmgr.ResourceLimits{
			ConnsInbound: rcmgr.LimitVal(n), ConnsOutbound: rcmgr.LimitVal(n + 256), Conns: rcmgr.LimitVal(n + 256),
			FD:      rcmgr.LimitVal(n + 1024),
			Streams: rcmgr.LimitVal(8 * n), StreamsInbound: rcmgr.LimitVal(4 * n), StreamsOutbound: rcmgr.LimitVal(4 * n),
		}
		t := max(256, n/16)
		part.Transient = rcmgr.ResourceLimits{
			ConnsInbound: rcmgr.LimitVal(t), ConnsOutbound: rcmgr.LimitVal(t), Conns: rcmgr.LimitVal(2 * t), FD: rcmgr.LimitVal(t),
			Streams: rcmgr.LimitVal(2 * t), StreamsInbound: rcmgr.LimitVal(t), StreamsOutbound: rcmgr.LimitVal(t),
		}
	}
	return part.Build(def), nil
}

// New returns the resource manager for cfg.
func New(cfg Config) (network.ResourceManager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	limits, err := Limits(cfg)
	if err != nil {
		return nil, err
	}
	opts := []rcmgr.Option{rcmgr.WithLimitPerSubnet(
		[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: cfg.ConnsPerIP}, {PrefixLength: 24, ConnCount: cfg.ConnsPerSubnet}},
		[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: cfg.ConnsPerIP}, {PrefixLength: 48, ConnCount: cfg.ConnsPerSubnet}},
	)}
	if cfg.Registerer != nil {
		rcmgr.MustRegisterWith(cfg.Registerer)
	} else {
		opts = append(opts, rcmgr.WithMetricsDisabled())
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), opts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}

// Option is the libp2p option of a host limited by cfg.
func Option(cfg Config) (libp2p.Option, error) {
	rm, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return libp2p.ResourceManager(rm), nil
}
