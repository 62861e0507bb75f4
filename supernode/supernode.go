// Package supernode runs the services a volunteer supernode adds to the
// parley network: the DHT in server mode (it stores handle records, on disk
// in home/dht, so a restart loses none), a
// circuit relay v2 for signalling between nodes that cannot dial each other,
// AutoNAT so nodes learn whether they are reachable, a STUN server for
// server-reflexive ICE candidates (announced over discovery.ServicesProtocol),
// the offline mailbox (package mailbox), and claim witnesses: signed
// first-seen times of handle claims (discovery.ClaimProtocol, ClaimServer).
//
// A supernode relays only what v2 allows (see RelayLimits) and never sees
// plaintext: every stream it relays is end-to-end encrypted by libp2p.
package supernode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/homelock"
	"github.com/parley-net/parley/internal/keyfile"
	"github.com/parley-net/parley/internal/metrics"
	"github.com/parley-net/parley/internal/p2plimits"
	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/mailbox"
	"github.com/parley-net/parley/supernode/mailboxserver"
)

// DefaultPort is the supernode's default TCP and UDP (QUIC) port.
const DefaultPort = 4100

// RelayLimits are the circuit relay v2 limits a supernode enforces: enough
// for signalling, never for media (media goes through TURN). A call's
// signalling stream between two NATed devices may ride one circuit for the
// whole call (hangup, ICE restarts), so a circuit may last an hour; the byte
// cap keeps that cheap.
var RelayLimits = relay.Resources{
	Limit: &relay.RelayLimit{
		Duration: time.Hour,
		Data:     1 << 17, // 128 KiB each way per circuit
	},
	ReservationTTL:         time.Hour,
	MaxReservations:        256,
	MaxCircuits:            16,
	BufferSize:             2048,
	MaxReservationsPerPeer: 1,
	MaxReservationsPerIP:   8,
	MaxReservationsPerASN:  32,
}

// Config configures a supernode.
type Config struct {
	// Home holds the supernode's key; required.
	Home string
	// Listen are multiaddrs to listen on; nil means TCP and QUIC on
	// DefaultPort of every interface.
	Listen []string
	// Bootstrap are other supernodes to join, besides those in the host
	// cache (home/hosts.json); nil means none. Reaching none is not an
	// error: the supernode serves alone and keeps trying.
	Bootstrap []peer.AddrInfo
	// MetricsAddr serves Prometheus metrics on http://ADDR/metrics; "" is off.
	MetricsAddr string
	// Registerer receives the metrics (the supernode's, its TURN server's,
	// its mailbox's and go-libp2p's); nil means a registry of its own when
	// MetricsAddr is set, else no metrics. With MetricsAddr it must also be
	// a prometheus.Gatherer, which is what is served.
	Registerer prometheus.Registerer
	// STUNAddr is the UDP address of the STUN server ("0.0.0.0:3478"); "" is
	// no STUN server.
	STUNAddr string
	// TURN, when set, runs a TURN server for peers' media (the supernode
	// relay tier) and hands credentials for it to connected peers over
	// turncreds.Protocol. An empty Secret gets a random one: the
	// supernode is the only issuer. nil means no TURN service.
	TURN *turnrelay.Config
	// Mailbox configures the offline mailbox; Home, Host, Closest and
	// IsSupernode are filled in. Its zero value is the mailbox's defaults.
	Mailbox mailboxserver.Config
	// Limits narrow the host's resource manager per peer and per address;
	// its zero value is p2plimits' defaults.
	Limits p2plimits.Config
	// MaxDevices is how many devices the supernode holds connections to at
	// once; the resource manager, connection manager and file-descriptor
	// limit are sized for it (see DefaultMaxDevices). 0 means
	// DefaultMaxDevices.
	MaxDevices int
	// Web serves guest calls on this TCP address ("0.0.0.0:8080"):
	// GET /call/HANDLE (guestweb.go); "" is off.
	Web string
	// WebGuests are the guest endpoint's limits; Caller and ICE are
	// filled in. Its zero value is browser's defaults.
	WebGuests browser.GuestConfig
	// Logger receives the supernode's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for record validity; nil means time.Now.
	Now func() time.Time
}

// Supernode is a running supernode.
type Supernode struct {
	cfg      Config
	host     host.Host
	dht      *dht.IpfsDHT
	lock     *homelock.Lock
	metrics  *metrics.Server // nil: not serving metrics
	stun     *STUNServer
	mailbox  *mailboxserver.Server
	turn     *turnrelay.Server
	creds    *turnrelay.CredentialService
	claims   *ClaimServer
	records  *recordStore
	hosts    *discovery.HostCache
	capacity *capacity
	guests   *browser.GuestServer // nil: no Web

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a supernode.
// It is long on purpose: it is the one place a supernode is assembled, in
// the order its services depend on each other, each undone on error.
func New(ctx context.Context, cfg Config) (_ *Supernode, err error) {
	if cfg.Home == "" {
		return nil, errors.New("supernode: Home is required")
	}
	if cfg.Listen == nil {
		cfg.Listen = []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lock, err := homelock.Acquire(cfg.Home, "supernode.lock")
	if err != nil {
		return nil, fmt.Errorf("start supernode: %w", err)
	}
	s := &Supernode{cfg: cfg, lock: lock}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			_ = s.Close() // the start's own error is the one to report
		}
	}()
	if s.records, err = openRecordStore(cfg.Home, cfg.Logger.With("service", "dht-records")); err != nil {
		return nil, fmt.Errorf("start supernode: %w", err)
	}
	var herr error
	if s.hosts, herr = discovery.LoadHostCache(cfg.Home, 0); herr != nil {
		cfg.Logger.Warn("host cache unreadable; starting with an empty one", "err", herr)
	}
	boot := cfg.Bootstrap
	if cached := s.hosts.Peers(); len(cached) > 0 {
		boot = discovery.MergePeers(boot, cached)
	}
	key, err := keyfile.LoadOrCreateEd25519(filepath.Join(cfg.Home, "supernode.key"))
	if err != nil {
		return nil, err
	}
	if s.capacity, err = newCapacity(cfg.MaxDevices, cfg.Logger); err != nil {
		return nil, err
	}
	cm, err := s.capacity.connManager()
	if err != nil {
		return nil, err
	}
	reg, gather, err := metrics.Registry(cfg.Registerer, cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("supernode: %w", err)
	}
	if reg != nil {
		cfg.Limits.Registerer = reg // the resource manager's own
	}
	rm, err := s.capacity.resourceManager(cfg.Limits)
	if err != nil {
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.ResourceManager(rm),
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.Listen...),
		libp2p.ConnectionManager(cm),
		// An operator runs a supernode on a public address; AutoNAT would
		// need other public peers to confirm it, which a new network lacks.
		libp2p.ForceReachabilityPublic(),
		libp2p.EnableRelayService(relay.WithResources(s.capacity.relayLimits())),
		libp2p.EnableNATService(),
		libp2p.Routing(func(h host.Host) (routing.PeerRouting, error) {
			var err error
			// Only the configured bootstrap supernodes and this one are
			// trusted to witness claims: a peer merely met (the host cache
			// holds any DHT server that was connected, a rogue too) is not.
			trusted := []peer.ID{h.ID()}
			for _, pi := range cfg.Bootstrap {
				trusted = append(trusted, pi.ID)
			}
			s.dht, err = discovery.NewDHT(ctx, h, discovery.DHTConfig{Server: true, Bootstrap: boot, Trusted: trusted, Now: cfg.Now, Datastore: s.records})
			return s.dht, err
		}),
	}
	if reg != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(reg))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if s.host, err = libp2p.New(opts...); err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	if peers := s.knownSupernodes(); len(peers) > 0 {
		if _, err := discovery.Bootstrap(ctx, s.host, peers, joinTimeout); err != nil {
			cfg.Logger.Warn("no other supernode reachable; serving alone and retrying", "err", err)
		}
	}
	var svc discovery.Services
	if cfg.STUNAddr != "" {
		if s.stun, err = ListenSTUN(cfg.STUNAddr, cfg.Logger.With("service", "stun")); err != nil {
			return nil, err
		}
		svc.STUNPort = s.stun.Addr().Port
	}
	discovery.ServeServices(s.host, svc)
	if s.claims, err = newClaimServer(s.host, key, filepath.Join(cfg.Home, claimsFile), cfg.Now, cfg.Logger.With("service", "claims")); err != nil {
		return nil, err
	}
	if cfg.TURN != nil {
		tc := *cfg.TURN
		if tc.Secret == "" {
			tc.Secret = hex.EncodeToString(randomBytes(32))
		}
		if tc.Logger == nil {
			tc.Logger = cfg.Logger.With("service", "turn")
		}
		if reg != nil && tc.Registerer == nil {
			tc.Registerer = reg
		}
		if s.turn, err = turnrelay.New(tc); err != nil {
			return nil, fmt.Errorf("supernode TURN: %w", err)
		}
		cc := s.turn.CredentialConfig()
		if reg != nil {
			cc.Registerer = reg
		}
		if s.creds, err = turnrelay.ServeCredentials(s.host, cc); err != nil {
			return nil, fmt.Errorf("supernode TURN credentials: %w", err)
		}
	}
	mb := cfg.Mailbox
	mb.Home, mb.Host, mb.Closest, mb.IsSupernode = cfg.Home, s.host, s.closest, s.isSupernode
	if mb.Logger == nil {
		mb.Logger = cfg.Logger.With("service", "mailbox")
	}
	if mb.Now == nil {
		mb.Now = cfg.Now
	}
	if reg != nil && mb.Registerer == nil {
		mb.Registerer = reg
	}
	if s.mailbox, err = mailboxserver.NewServer(mb); err != nil {
		return nil, err
	}
	if reg != nil {
		s.registerMetrics(reg)
	}
	if gather != nil {
		if s.metrics, err = metrics.Serve(cfg.MetricsAddr, gather); err != nil {
			return nil, err
		}
	}
	if cfg.Web != "" {
		if err := s.startGuestWeb(); err != nil {
			return nil, err
		}
	}
	s.wg.Add(2)
	go s.sweepLoop()
	go s.joinLoop()
	cfg.Logger.Info("supernode started", "peer", s.host.ID(), "addrs", s.host.Addrs())
	return s, nil
}

// sweepLoop removes expired records from disk at start and every
// recordSweepInterval; kad-dht itself only drops one when it is read.
func (s *Supernode) sweepLoop() {
	defer s.wg.Done()
	now := time.Now
	if s.cfg.Now != nil {
		now = s.cfg.Now
	}
	t := time.NewTicker(recordSweepInterval)
	defer t.Stop()
	for {
		kept, dropped, err := s.records.sweep(s.ctx, s.dht.Validator, discovery.RecordMaxAge, now())
		if err != nil && s.ctx.Err() == nil {
			s.cfg.Logger.Warn("sweep DHT records", "err", err)
		} else {
			s.cfg.Logger.Info("DHT records on disk", "kept", kept, "expired", dropped)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Supernode) registerMetrics(reg prometheus.Registerer) {
	if s.stun != nil {
		reg.MustRegister(s.stun.Collectors()...)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_supernode_connected_peers", Help: "Peers connected to this supernode.",
	}, func() float64 { return float64(len(s.host.Network().Peers())) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_supernode_dht_routing_table_size", Help: "DHT servers in the routing table.",
	}, func() float64 { return float64(s.dht.RoutingTable().Size()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_supernode_dht_records", Help: "DHT records (handle records) kept on disk.",
	}, func() float64 {
		c, _ := s.RecordCount()
		return float64(c)
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_mailbox_envelopes", Help: "Envelopes the mailbox keeps for offline devices.",
	}, func() float64 {
		c, _ := s.mailbox.Count()
		return float64(c)
	}))
}

// ID is the supernode's peer ID.
func (s *Supernode) ID() peer.ID { return s.host.ID() }

// Host is the supernode's libp2p host.
func (s *Supernode) Host() host.Host { return s.host }

// MetricsAddr is where metrics are served, or nil.
func (s *Supernode) MetricsAddr() net.Addr { return s.metrics.Addr() }

// Addrs are the supernode's full multiaddrs, /p2p/<id> included: what a user
// copies as a bootstrap address.
func (s *Supernode) Addrs() []ma.Multiaddr {
	infos, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: s.host.ID(), Addrs: s.host.Addrs()})
	return infos
}

// AddrInfo is the supernode as a bootstrap peer.
func (s *Supernode) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: s.host.ID(), Addrs: s.host.Addrs()}
}

// STUNAddr is the STUN server's address, or nil.
func (s *Supernode) STUNAddr() *net.UDPAddr {
	if s.stun == nil {
		return nil
	}
	return s.stun.Addr()
}

// closest returns the k supernodes, this one included, closest to key, in
// distinct sites where it can (mailbox.PickHolders).
func (s *Supernode) closest(ctx context.Context, key string, k int) ([]peer.ID, error) {
	peers, err := s.dht.GetClosestPeers(ctx, key)
	if err != nil && len(peers) == 0 {
		peers = nil // alone in the network: this supernode is the closest
	}
	all := append([]peer.ID{s.host.ID()}, peers...)
	sorted := kb.SortClosestPeers(all, kb.ConvertKey(key))
	return mailbox.PickHolders(sorted, k, s.site), nil
}

// site is the network a supernode is in (mailbox.Site).
func (s *Supernode) site(p peer.ID) string {
	if p == s.host.ID() {
		return mailbox.Site(s.host.Addrs())
	}
	return mailbox.Site(s.host.Peerstore().Addrs(p))
}

func (s *Supernode) isSupernode(p peer.ID) bool {
	return s.dht.RoutingTable().Find(p) != ""
}

// RecordCount is how many DHT value records (handle records) the supernode
// keeps on disk.
func (s *Supernode) RecordCount() (int, error) { return s.records.count(s.ctx) }

// Mailbox is the supernode's mailbox.
func (s *Supernode) Mailbox() *mailboxserver.Server { return s.mailbox }

// DHT is the supernode's DHT (server mode).
func (s *Supernode) DHT() *dht.IpfsDHT { return s.dht }

// Claims is the supernode's claim witness service.
func (s *Supernode) Claims() *ClaimServer { return s.claims }

// TURN is the supernode's TURN server, or nil.
func (s *Supernode) TURN() *turnrelay.Server { return s.turn }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Close stops the supernode. It reports the errors of the stores that
// hold data (the mailbox, the claims log, the record store): one that did
// not close cleanly may not hold its last writes. The network services'
// errors say nothing an operator can act on at exit.
func (s *Supernode) Close() error {
	var errs []error
	closeStore := func(what string, c interface{ Close() error }) {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the %s: %w", what, err))
		}
	}
	if s.guests != nil {
		_ = s.guests.Close() // the web endpoint: nothing stored
	}
	if s.creds != nil {
		s.creds.Close()
	}
	if s.turn != nil {
		s.turn.Close()
	}
	if s.mailbox != nil {
		closeStore("mailbox", s.mailbox)
	}
	if s.claims != nil {
		closeStore("claims log", s.claims)
	}
	if s.stun != nil {
		s.stun.Close()
	}
	s.metrics.Close()
	if s.dht != nil {
		s.dht.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.host != nil {
		s.host.Close()
	}
	if s.records != nil {
		closeStore("record store", s.records)
	}
	return errors.Join(append(errs, s.lock.Release())...)
}
