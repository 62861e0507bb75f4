package turnrelay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NoLimit, in a limit field of Config, switches that limit off.
const NoLimit = -1

// Defaults for the zero values of Config.
const (
	DefaultRealm                 = "parley"
	DefaultMinPort               = 49152
	DefaultMaxPort               = 65535
	DefaultMaxCredentialTTL      = 24 * time.Hour
	DefaultAllocationLifetime    = 10 * time.Minute // RFC 8656 §7.2 default
	DefaultMaxAllocationDuration = 24 * time.Hour
	DefaultMaxAllocations        = 1000
	DefaultMaxAllocationsPerUser = 10
	DefaultMaxAllocationsPerIP   = 20
	// DefaultMaxBytesPerSecond (about 1 Mbit/s) is eight times Opus at its
	// 128 kbit/s stereo music setting: room for calls, none for bulk data.
	DefaultMaxBytesPerSecond   = 128 << 10
	DefaultMaxPacketsPerSecond = 500 // a 20 ms call sends 50, plus RTCP and ICE checks
	// MinSecretLen is the shortest shared secret Config accepts.
	MinSecretLen = 16
)

// Config configures a Server. Every field says what its zero value means;
// New refuses unknown combinations instead of guessing.
type Config struct {
	// UDPAddr is the UDP listen address ("0.0.0.0:3479"); "" is no UDP
	// listener.
	UDPAddr string
	// TCPAddr is the TCP listen address; "" is no TCP listener.
	TCPAddr string
	// TLSAddr is the TLS-over-TCP listen address (turns:); "" is no TLS
	// listener. It needs TLSCertFile and TLSKeyFile, or TLSConfig.
	TLSAddr string
	// TLSCertFile and TLSKeyFile are PEM files for the TLS listener; both or
	// neither, and only with TLSAddr.
	TLSCertFile, TLSKeyFile string
	// TLSConfig is used for the TLS listener instead of the files (tests use a
	// generated self-signed certificate); nil means load the files. Setting
	// both is an error.
	TLSConfig *tls.Config
	// At least one of UDPAddr, TCPAddr and TLSAddr is required.

	// RelayIPs are the public addresses written into XOR-RELAYED-ADDRESS: at
	// most one IPv4 and one IPv6 address; required. An allocation of a family
	// with no relay IP is refused.
	RelayIPs []netip.Addr
	// RelayBindIPs are the local addresses relay sockets bind to, in the same
	// order as RelayIPs; nil means RelayIPs themselves. Set it when the public
	// address is not on an interface (1:1 NAT, e.g. 0.0.0.0 behind a cloud
	// provider's public IP).
	RelayBindIPs []netip.Addr
	// MinPort and MaxPort bound the relayed ports (inclusive); both zero means
	// DefaultMinPort to DefaultMaxPort. One zero, or MinPort > MaxPort, is an
	// error.
	MinPort, MaxPort uint16

	// Secret is the TURN REST shared secret (coturn's static-auth-secret);
	// required, at least MinSecretLen bytes.
	Secret string
	// Realm is the STUN realm; "" means DefaultRealm.
	Realm string
	// MaxCredentialTTL refuses usernames expiring further in the future than
	// this; 0 means DefaultMaxCredentialTTL.
	MaxCredentialTTL time.Duration

	// AllowCIDRs are peer prefixes allowed although they are in a refused
	// range (see PeerPolicy); nil allows none.
	AllowCIDRs []netip.Prefix
	// AllowOwnAddrs lets allocations send to ports of the relay's own
	// addresses (its interface addresses and relay and bind IPs) other than
	// its listeners. false, the only safe setting, refuses them whatever
	// AllowCIDRs says, except for another allocation's relayed port. Only
	// for tests that run their peers on the relay's own loopback address:
	// it exposes every service on the host to the relay's clients.
	AllowOwnAddrs bool

	// MaxAllocations caps live allocations on the server; 0 means
	// DefaultMaxAllocations, NoLimit none. It also caps open connections on
	// each of the TCP and TLS listeners (one allocation per connection).
	MaxAllocations int
	// MaxAllocationsPerUser caps live allocations per credential id (the
	// <id> of "<expiry>:<id>"); 0 means DefaultMaxAllocationsPerUser,
	// NoLimit none.
	MaxAllocationsPerUser int
	// MaxAllocationsPerIP caps live allocations per client IP address (and
	// open TCP/TLS connections per IP); 0 means DefaultMaxAllocationsPerIP,
	// NoLimit none.
	MaxAllocationsPerIP int
	// MaxBytesPerSecond caps what one allocation relays in each direction
	// (excess is dropped); 0 means DefaultMaxBytesPerSecond, NoLimit none.
	MaxBytesPerSecond int
	// MaxPacketsPerSecond caps packets one allocation relays in each
	// direction; 0 means DefaultMaxPacketsPerSecond, NoLimit none.
	MaxPacketsPerSecond int
	// AllocationLifetime is the lifetime granted when a client does not ask
	// for one (pion grants any request under one hour); 0 means
	// DefaultAllocationLifetime.
	AllocationLifetime time.Duration
	// MaxAllocationDuration closes an allocation this long after it was
	// made, however often it is refreshed; 0 means
	// DefaultMaxAllocationDuration, NoLimit (as a Duration) none.
	MaxAllocationDuration time.Duration

	// Registerer receives the server's metrics; nil means no metrics.
	Registerer prometheus.Registerer
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for credential expiry and rate limits; nil means
	// time.Now.
	Now func() time.Time
}

// limit turns a Config limit into an effective one: 0 → def, NoLimit → 0
// (meaning none), negative otherwise → error.
func limit(name string, v, def int) (int, error) {
	switch {
	case v == 0:
		return def, nil
	case v == NoLimit:
		return 0, nil
	case v < 0:
		return 0, fmt.Errorf("turn relay config: %s %d: use a positive limit, 0 for the default or NoLimit", name, v)
	}
	return v, nil
}

// settings are a validated Config with defaults applied; a 0 limit is none.
type settings struct {
	Config
	relay4, relay6 netip.Addr // public relay addresses
	bind4, bind6   netip.Addr // local bind addresses
	policy         *PeerPolicy
	maxAllocs      int
	maxPerUser     int
	maxPerIP       int
	bytesPerSec    int
	packetsPerSec  int
	maxDuration    time.Duration
}

// validate checks c and returns it with every default filled in.
func (c Config) validate() (*settings, error) {
	s := &settings{Config: c}
	if err := c.checkListeners(); err != nil {
		return nil, err
	}
	if len(c.Secret) < MinSecretLen {
		return nil, fmt.Errorf("turn relay config: shared secret of %d bytes is too short (at least %d)", len(c.Secret), MinSecretLen)
	}
	if s.Realm == "" {
		s.Realm = DefaultRealm
	}
	if s.MaxCredentialTTL == 0 {
		s.MaxCredentialTTL = DefaultMaxCredentialTTL
	} else if s.MaxCredentialTTL < time.Second {
		return nil, fmt.Errorf("turn relay config: MaxCredentialTTL %v is under a second", s.MaxCredentialTTL)
	}
	if err := s.relayAddrs(); err != nil {
		return nil, err
	}
	switch {
	case c.MinPort == 0 && c.MaxPort == 0:
		s.MinPort, s.MaxPort = DefaultMinPort, DefaultMaxPort
	case c.MinPort == 0 || c.MaxPort == 0:
		return nil, fmt.Errorf("turn relay config: port range %d-%d: set both ends or neither", c.MinPort, c.MaxPort)
	case c.MinPort > c.MaxPort:
		return nil, fmt.Errorf("turn relay config: port range %d-%d: MinPort above MaxPort", c.MinPort, c.MaxPort)
	}
	var err error
	if s.policy, err = NewPeerPolicy(c.AllowCIDRs); err != nil {
		return nil, fmt.Errorf("turn relay config: %w", err)
	}
	if err := s.limits(); err != nil {
		return nil, err
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return s, nil
}

// checkListeners checks that c listens somewhere, and on TLS exactly when
// it has one certificate source.
func (c Config) checkListeners() error {
	if c.UDPAddr == "" && c.TCPAddr == "" && c.TLSAddr == "" {
		return errors.New("turn relay config: no listener (set UDPAddr, TCPAddr or TLSAddr)")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("turn relay config: TLSCertFile and TLSKeyFile go together")
	}
	hasFiles := c.TLSCertFile != ""
	switch {
	case c.TLSAddr == "" && (hasFiles || c.TLSConfig != nil):
		return errors.New("turn relay config: TLS certificate given without TLSAddr")
	case c.TLSAddr != "" && !hasFiles && c.TLSConfig == nil:
		return errors.New("turn relay config: TLSAddr needs TLSCertFile and TLSKeyFile")
	case hasFiles && c.TLSConfig != nil:
		return errors.New("turn relay config: set TLS certificate files or TLSConfig, not both")
	}
	return nil
}

// limits checks and fills in the allocation limits, rates and lifetimes.
func (s *settings) limits() error {
	c := s.Config
	var err error
	for _, l := range []struct {
		name   string
		v, def int
		out    *int
	}{
		{"MaxAllocations", c.MaxAllocations, DefaultMaxAllocations, &s.maxAllocs},
		{"MaxAllocationsPerUser", c.MaxAllocationsPerUser, DefaultMaxAllocationsPerUser, &s.maxPerUser},
		{"MaxAllocationsPerIP", c.MaxAllocationsPerIP, DefaultMaxAllocationsPerIP, &s.maxPerIP},
		{"MaxBytesPerSecond", c.MaxBytesPerSecond, DefaultMaxBytesPerSecond, &s.bytesPerSec},
		{"MaxPacketsPerSecond", c.MaxPacketsPerSecond, DefaultMaxPacketsPerSecond, &s.packetsPerSec},
	} {
		if *l.out, err = limit(l.name, l.v, l.def); err != nil {
			return err
		}
	}
	if s.bytesPerSec > 0 && s.bytesPerSec < 1500 {
		return fmt.Errorf("turn relay config: MaxBytesPerSecond %d is below one full-size packet", s.bytesPerSec)
	}
	switch lt := c.AllocationLifetime; {
	case lt == 0:
		s.AllocationLifetime = DefaultAllocationLifetime
	case lt < 30*time.Second || lt > time.Hour:
		return fmt.Errorf("turn relay config: AllocationLifetime %v is outside 30s to 1h", lt)
	}
	switch d := c.MaxAllocationDuration; {
	case d == 0:
		s.maxDuration = DefaultMaxAllocationDuration
	case d == NoLimit:
		s.maxDuration = 0
	case d < time.Second:
		return fmt.Errorf("turn relay config: MaxAllocationDuration %v: use at least a second, 0 for the default or NoLimit", d)
	default:
		s.maxDuration = d
	}
	return nil
}

func (s *settings) relayAddrs() error {
	if len(s.RelayIPs) == 0 {
		return errors.New("turn relay config: RelayIPs is required (the public address relayed ports are on)")
	}
	if s.RelayBindIPs != nil && len(s.RelayBindIPs) != len(s.RelayIPs) {
		return fmt.Errorf("turn relay config: %d RelayBindIPs for %d RelayIPs", len(s.RelayBindIPs), len(s.RelayIPs))
	}
	for i, ip := range s.RelayIPs {
		ip = ip.Unmap()
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" {
			return fmt.Errorf("turn relay config: relay IP %v is not a unicast address", s.RelayIPs[i])
		}
		bind := ip
		if s.RelayBindIPs != nil {
			bind = s.RelayBindIPs[i].Unmap()
			if !bind.IsValid() || bind.Is4() != ip.Is4() {
				return fmt.Errorf("turn relay config: bind IP %v for relay IP %v: not the same family", s.RelayBindIPs[i], ip)
			}
		}
		relay, b := &s.relay4, &s.bind4
		if ip.Is6() {
			relay, b = &s.relay6, &s.bind6
		}
		if relay.IsValid() {
			return fmt.Errorf("turn relay config: two relay IPs of one family (%v and %v)", *relay, ip)
		}
		*relay, *b = ip, bind
	}
	return nil
}

// listenerAddr reports what a listener is bound to, for URLs and tests.
func listenerAddr(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
