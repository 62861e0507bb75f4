// Package node is a parley device: its libp2p host, identity and keystore,
// handle publishing, chat delivery with a durable outbox, calls (signalling
// on /parley/call/2.0.0, media through package media, over the relay tiers
// its path policy allows), and the control API the CLI talks to. A node never trusts what a frame says about who sent it:
// the sender is the Noise-authenticated peer, listed as a device in an
// account-signed record, of the account this node pinned for the handle from
// a verified DHT lookup (see verifySender and SECURITY.md); a record the
// peer presents never binds a handle to an account by itself.
package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	lpmetrics "github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/homelock"
	"github.com/parley-net/parley/internal/lograte"
	"github.com/parley-net/parley/internal/metrics"
	"github.com/parley-net/parley/internal/p2plimits"
	"github.com/parley-net/parley/mailbox"
	"github.com/parley-net/parley/media"
)

// Defaults of Config.
const (
	DefaultBootstrapTimeout  = 15 * time.Second
	DefaultRetryInterval     = 2 * time.Second
	DefaultRepublishInterval = 10 * time.Minute
	DefaultDeliveryTimeout   = 10 * time.Second
	DefaultFetchInterval     = 30 * time.Second
	DefaultChatStreamsPerIP  = 16
	DefaultChatFrameTimeout  = 5 * time.Second
	maxRetryBackoff          = 60 * time.Second
	resolveCacheTTL          = 30 * time.Second
	// cachedBootstrap is how many host-cache supernodes join Bootstrap.
	cachedBootstrap = 4
)

// Config configures a Node. The zero value of every field but Home and
// Bootstrap is a working default.
type Config struct {
	// Home holds the identity, keys and database. Required.
	Home string
	// Listen are the multiaddrs to listen on; nil means TCP and QUIC on an
	// ephemeral port of every interface.
	Listen []string
	// Bootstrap are supernodes to join the network through, besides those
	// in the host cache (home/hosts.json); required while the host cache is
	// empty.
	Bootstrap []peer.AddrInfo
	// BootstrapTimeout bounds one attempt to join; Start waits at most this
	// long before it returns a node that is offline and keeps trying. 0
	// means DefaultBootstrapTimeout.
	BootstrapTimeout time.Duration
	// RetryInterval is how often the outbox is scanned; 0 means DefaultRetryInterval.
	RetryInterval time.Duration
	// RepublishInterval is how often, ±20 %, the handle record is
	// republished when nothing else prompted it (see netLoop); 0 means
	// DefaultRepublishInterval.
	RepublishInterval time.Duration
	// DeliveryTimeout bounds one delivery attempt to one device; 0 means
	// DefaultDeliveryTimeout.
	DeliveryTimeout time.Duration
	// FetchInterval is how often the device's mailboxes are checked (also
	// once at start); 0 means DefaultFetchInterval.
	FetchInterval time.Duration
	// MailboxK is how many supernodes keep an account's mail; 0 means
	// mailbox.DefaultK.
	MailboxK int
	// Media is the base configuration of every call's media session (ICE
	// servers, loopback candidates, bitrate, relay-only); the node adds the
	// STUN servers of its supernodes. The zero value is media's default.
	Media media.Config
	// CloudRelays are operator-run TURN relays (parley relay) that hand this
	// node credentials; nil means none: no cloud tier.
	CloudRelays []peer.AddrInfo
	// Path is the calls' path policy: "" or "auto" (direct, supernode
	// relay, cloud relay), or tiers in the order preferred, such as
	// "supernode,cloud" (relay-only); one tier forces it. See callMedia.
	Path string
	// Profile is "" or "desktop" (every path), or "mobile" (relay-only, low
	// bitrate, FEC, DTX, longer keepalives).
	Profile string
	// AutoAnswer, when set, answers every incoming call with the audio ends
	// it returns; nil means calls ring until a client answers.
	AutoAnswer func(CallInfo) (CallOptions, error)
	// NoGuests refuses guests' calls (people on a supernode's /call/HANDLE
	// page, who have no handle; see guestcall.go); false lets them ring.
	NoGuests bool
	// Limits narrow the host's resource manager per peer and per address;
	// its zero value is p2plimits' defaults.
	Limits p2plimits.Config
	// ChatStreamsPerIP caps the inbound chat streams open at once from one
	// IP address (of the connection: a relay's for a relayed one), below
	// the 64 in total, so one attacker's many identities cannot hold every
	// chat slot; 0 means DefaultChatStreamsPerIP.
	ChatStreamsPerIP int
	// ChatFrameTimeout is how long a chat frame may take to arrive once its
	// first byte has; 0 means DefaultChatFrameTimeout.
	ChatFrameTimeout time.Duration
	// Bandwidth, when set, counts every byte the host sends and receives,
	// per protocol and peer (a measuring hook); nil means none.
	Bandwidth lpmetrics.Reporter
	// Registerer, if set, receives the node's Prometheus metrics (calls,
	// mailbox, DHT lookups, outbox; see metrics.go) and go-libp2p's own
	// (hole punching, AutoNAT, relay client, identify, resource manager);
	// nil means no metrics (unless MetricsAddr is set).
	Registerer prometheus.Registerer
	// MetricsAddr, if set, is a TCP address ("127.0.0.1:9102") where the
	// node serves its metrics at /metrics, from Registerer when it is a
	// prometheus.Gatherer too, else from a registry of its own; "" means
	// no metrics server.
	MetricsAddr string
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// Clock drives the calls' state machines (timers and time); nil means
	// the real clock.
	Clock clock.Clock
	// CallTimings are the calls' timers; each zero field is its default.
	CallTimings CallTimings
	// Now is the clock of everything else; nil means Clock.Now.
	Now func() time.Time
}

// Node is a running parley device.
type Node struct {
	cfg   Config
	log   *slog.Logger
	id    *Identity
	store *Store
	host  host.Host
	dht   *dht.IpfsDHT
	lock  *homelock.Lock
	hosts *discovery.HostCache
	// trusted are the configured bootstrap supernodes, whose claim
	// witnesses count (nil: every bootstrap peer, the host cache's too).
	trusted []peer.ID
	net     netView

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	events      *eventBus
	inbound     *streamLimiter
	badInput    *lograte.Limiter // warnings about what peers send: a count per interval, not a line per stream
	callLimit   *streamLimiter
	calls       calls
	sigLinks    sync.Map // *streamLink -> struct{}: call signalling links, reset at Close
	clock       clock.Clock
	timings     CallTimings
	links       linkCodes
	creds       relayCreds
	metrics     *nodeMetrics
	metricsSrv  *metrics.Server // nil: no metrics server
	kick        chan struct{}
	inflight    sync.Map // device peer ID -> struct{}: a delivery is under way
	unreachable sync.Map // device peer ID -> time.Time: not dialled for new mail until then

	ui atomic.Pointer[UI] // the local web app, when served (webui.go)

	mu         sync.Mutex
	resolved   map[string]resolvedRecord
	refreshing map[string]bool
	failed     map[string]time.Time // handle -> when a verifying lookup of it last failed
}

type resolvedRecord struct {
	rec *discovery.HandleRecord
	at  time.Time
}

func (c *Config) setDefaults() error {
	if c.Home == "" {
		return errors.New("node: Home is required")
	}
	if err := checkPolicy(c.Path, c.Profile); err != nil {
		return err
	}
	if c.Listen == nil {
		c.Listen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	}
	if c.BootstrapTimeout == 0 {
		c.BootstrapTimeout = DefaultBootstrapTimeout
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.RepublishInterval == 0 {
		c.RepublishInterval = DefaultRepublishInterval
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if c.FetchInterval == 0 {
		c.FetchInterval = DefaultFetchInterval
	}
	if c.MailboxK == 0 {
		c.MailboxK = mailbox.DefaultK
	}
	if c.ChatStreamsPerIP == 0 {
		c.ChatStreamsPerIP = DefaultChatStreamsPerIP
	}
	if c.ChatFrameTimeout == 0 {
		c.ChatFrameTimeout = DefaultChatFrameTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Now == nil {
		c.Now = c.Clock.Now
	}
	return nil
}

// Start opens the home and joins the network through the bootstrap
// supernodes and those in the host cache, waiting at most BootstrapTimeout.
// When none answers it still returns a working node, offline: the user's
// history and outbox are served, Status says why it is offline, and the node
// keeps trying (netLoop) and comes online by itself. Start fails only for
// what no retry can fix: the home, the identity, a handle held by another
// account, or no supernode address at all.
// It is long on purpose: it is the one place a node is assembled, step by
// step in the order the parts depend on each other, each undone on error.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	lock, err := homelock.Acquire(cfg.Home, "daemon.lock")
	if err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, lock: lock, events: newEventBus(), inbound: newStreamLimiter(64, 4).perIP(cfg.ChatStreamsPerIP),
		callLimit: newStreamLimiter(16, 2).perIP(callStreamsPerIP), calls: calls{byID: map[string]*Call{}}, links: linkCodes{codes: map[string]time.Time{}},
		kick: make(chan struct{}, 1), resolved: map[string]resolvedRecord{},
		clock: cfg.Clock, timings: cfg.CallTimings.withDefaults(), metrics: newMetrics()}
	n.badInput = lograte.New(cfg.Logger, lograte.Config{Now: cfg.Now})
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			_ = n.Close() // the start's own error is the one to report
		}
	}()
	var herr error
	if n.hosts, herr = discovery.LoadHostCache(cfg.Home, 0); herr != nil {
		n.log.Warn("host cache unreadable; starting with an empty one", "err", herr)
	}
	// The most recently met supernodes serve as bootstrap supernodes too
	// (relay reservations, circuits, STUN), so a device whose --bootstrap
	// list is dead still has relays once it joins through its host cache.
	cached := n.hosts.Peers()
	// Only the supernodes the user configured are trusted to witness handle
	// claims; the host cache holds whatever DHT server was connected, a
	// rogue one too. A device started from its host cache alone trusts that.
	for _, pi := range n.cfg.Bootstrap {
		n.trusted = append(n.trusted, pi.ID)
	}
	n.cfg.Bootstrap = discovery.MergePeers(n.cfg.Bootstrap, cached[:min(len(cached), cachedBootstrap)])
	if len(n.bootstrapPeers()) == 0 {
		return nil, fmt.Errorf("%w: pass --bootstrap with a supernode's multiaddr", discovery.ErrNoBootstrap)
	}
	if n.id, err = LoadIdentity(cfg.Home); err != nil {
		return nil, err
	}
	if n.store, err = OpenStore(cfg.Home); err != nil {
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		if err := n.serveMetrics(); err != nil {
			return nil, err
		}
	}
	if n.cfg.Registerer != nil {
		if err := n.metrics.register(n.cfg.Registerer, n.store); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	if err := n.startHost(); err != nil {
		return nil, err
	}
	n.host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		n.unreachable.Delete(c.RemotePeer()) // it is back
	}})
	n.host.SetStreamHandler(ChatProtocol, n.handleChat)
	n.host.SetStreamHandler(CallProtocol, n.handleCall)
	n.host.SetStreamHandler(LinkProtocol, n.handleLink)
	n.host.SetStreamHandler(SyncProtocol, n.handleSync)

	joinCtx, cancel := context.WithTimeout(ctx, cfg.BootstrapTimeout)
	defer cancel()
	state, reason, publishNow := stateOnline, "", false
	if err := n.join(joinCtx); err != nil {
		state, reason = stateOffline, offlineReason(err)
		n.log.Warn("starting offline", "reason", reason)
	} else {
		// Online before anything looks a handle up: the mail fetched now
		// has senders to verify.
		n.net.set(netSnapshot{state: state, since: cfg.Now()})
		// Mail that waited while this device was away comes first; publishing
		// (a DHT lookup that can wait on dead supernodes) need not hold it up.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.FetchMailbox(n.ctx)
		}()
		if err := n.publish(joinCtx); errors.Is(err, discovery.ErrHandleTaken) {
			return nil, err
		} else if err != nil {
			n.log.Warn("publish handle; retrying", "err", err)
			publishNow = true
		}
	}
	n.net.set(netSnapshot{state: state, since: cfg.Now(), reason: reason})
	if n.cfg.Registerer != nil {
		n.wg.Add(1)
		go n.pathLoop()
	}
	n.wg.Add(5)
	go n.netLoop(state, reason, publishNow)
	go n.outboxLoop()
	go n.reserveLoop()
	go n.cloudLoop()
	go func() {
		defer n.wg.Done()
		if c, err := n.store.MessageCount(n.ctx); err == nil && c == 0 && len(n.Devices()) > 1 {
			// A device linked after the account had history: copy it from a
			// sibling that is online.
			if err := n.waitOnline(n.ctx); err != nil {
				return
			}
			if _, err := n.SyncHistory(n.ctx); err != nil {
				n.log.Info("history sync", "err", err)
			}
		}
	}()
	n.log.Info("node started", "handle", n.id.Handle(), "peer", n.host.ID(), "addrs", n.host.Addrs(), "state", state)
	return n, nil
}

// waitOnline waits until the node is online or ctx ends.
func (n *Node) waitOnline(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for n.online() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func (n *Node) startHost() error {
	var d *dht.IpfsDHT
	lc := n.cfg.Limits
	lc.Registerer = n.cfg.Registerer
	limits, err := p2plimits.Option(lc)
	if err != nil {
		return err
	}
	opts := []libp2p.Option{
		limits,
		libp2p.Identity(n.id.DeviceKey),
		libp2p.ListenAddrStrings(n.cfg.Listen...),
		libp2p.EnableHolePunching(),
		libp2p.EnableAutoRelayWithStaticRelays(n.cfg.Bootstrap),
		libp2p.SwarmOpts(swarm.WithDialRanker(dialRanker)),
		libp2p.Routing(func(h host.Host) (routing.PeerRouting, error) {
			var err error
			d, err = discovery.NewDHT(n.ctx, h, discovery.DHTConfig{Bootstrap: n.cfg.Bootstrap, Trusted: n.trusted, Now: n.cfg.Now})
			return d, err
		}),
	}
	if n.cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(n.cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if n.cfg.Bandwidth != nil {
		opts = append(opts, libp2p.BandwidthReporter(n.cfg.Bandwidth))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return fmt.Errorf("start libp2p host: %w", err)
	}
	n.host, n.dht = h, d
	return nil
}

// Close stops the node and releases everything it holds.
func (n *Node) Close() error {
	n.calls.mu.Lock()
	var live []*Call
	for _, c := range n.calls.byID {
		live = append(live, c)
	}
	n.calls.mu.Unlock()
	for _, c := range live {
		c.Hangup()
	}
	n.cancel()
	n.closeLinks()
	n.wg.Wait()
	n.badInput.Flush()
	n.events.close()
	if n.dht != nil {
		n.dht.Close()
	}
	if n.host != nil {
		n.host.Close()
	}
	n.metricsSrv.Close()
	// The store's error is the one that matters: a database that did not
	// close cleanly may not hold the last writes. The host's, the DHT's and
	// the metrics server's say nothing the user can act on at exit.
	var storeErr error
	if n.store != nil {
		if storeErr = n.store.Close(); storeErr != nil {
			storeErr = fmt.Errorf("close the message store: %w", storeErr)
		}
	}
	return errors.Join(storeErr, n.lock.Release())
}

// ID is the device's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Identity is the device's identity.
func (n *Node) Identity() *Identity { return n.id }

// Store is the device's database.
func (n *Node) Store() *Store { return n.store }

// publish gathers claim witnesses from the supernodes and signs a new
// record (when this device holds the account key), stores it, then reads
// the handle back from several DHT servers to catch a rival claim. A rival
// with a claim witnessed earlier than ours wins (ErrHandleTaken); a later
// rival never stops us: our earlier-witnessed record replaces it wherever
// servers rank claims, and the rival is logged.
func (n *Node) publish(ctx context.Context) error {
	if n.id.Account != nil {
		n.gatherWitnesses(ctx)
	}
	rec, err := n.id.Resign(n.cfg.Now())
	if err != nil {
		return err
	}
	if err := discovery.Publish(ctx, n.dht, rec); err != nil {
		return err
	}
	mine, err := discovery.ParseHandleRecord(rec)
	if err != nil {
		return err
	}
	l, err := discovery.LookupHandle(ctx, n.dht, n.id.Handle())
	if err != nil {
		return fmt.Errorf("check published handle: %w", err)
	}
	v := discovery.ValidatorOf(n.dht)
	for _, c := range l.Claims {
		if n.id.AccountPub.Equal(ed25519.PublicKey(c.Account)) {
			continue
		}
		if c.Rank.Compare(v.Rank(mine)) < 0 {
			return fmt.Errorf("%w: %s belongs to the account with fingerprint %s", discovery.ErrHandleTaken, n.id.Handle(), c.Fingerprint)
		}
		n.log.Warn("a later claim of my handle by another account is in the DHT; my earlier claim stands",
			"handle", n.id.Handle(), "rival", c.Fingerprint, "servers", len(c.Servers))
	}
	got := mine
	if c := l.Of(n.id.AccountPub); c != nil && c.Record.Seq > mine.Seq {
		// Another device of the account signed a newer device list.
		got = c.Record
		if err := n.id.AdoptRecord(c.Raw); err != nil {
			n.log.Warn("newer record of my account not adopted", "err", err)
		}
	}
	n.log.Info("handle published", "handle", n.id.Handle(), "seq", got.Seq, "witnesses", len(got.Witnesses))
	return nil
}

// gatherWitnesses asks the bootstrap supernodes, then other DHT servers,
// up to discovery.MaxWitnesses in all, to witness this account's claim of
// its handle, and keeps the earliest witness of each.
func (n *Node) gatherWitnesses(ctx context.Context) {
	var ask, boot []peer.ID
	seen := map[peer.ID]bool{}
	for _, pi := range n.cfg.Bootstrap {
		boot = append(boot, pi.ID)
	}
	// The servers closest to the handle's key hold its record and are the
	// ones other devices ask: each must have seen this claim before a rival
	// asks it to witness one. Right after joining, the routing table holds
	// little more than the bootstrap supernode, so they are looked up.
	closest, err := n.dht.GetClosestPeers(ctx, discovery.HandleKey(n.id.Handle()))
	if err != nil {
		n.log.Debug("claim witnesses: closest servers", "err", err)
	}
	for _, p := range append(append(boot, closest...), n.dht.RoutingTable().ListPeers()...) {
		if !seen[p] && len(ask) < discovery.MaxWitnesses {
			seen[p] = true
			ask = append(ask, p)
		}
	}
	var mu sync.Mutex
	var fresh []discovery.Witness
	var wg sync.WaitGroup
	for _, p := range ask {
		wg.Add(1)
		go func(p peer.ID) {
			defer wg.Done()
			w, err := discovery.RequestWitness(ctx, n.host, p, n.id.Handle(), n.id.AccountPub)
			if err != nil {
				n.log.Debug("claim witness", "supernode", p, "err", err)
				return
			}
			mu.Lock()
			fresh = append(fresh, *w)
			mu.Unlock()
		}(p)
	}
	wg.Wait()
	if _, err := n.id.AddWitnesses(fresh, boot); err != nil {
		n.log.Warn("keep claim witnesses", "err", err)
	}
}

// Whois is what a handle lookup found.
type Whois struct {
	Handle      string        `json:"handle"`
	Fingerprint string        `json:"fingerprint"`
	Devices     []WhoisDevice `json:"devices"`
	Seq         uint64        `json:"seq"`
	Expires     time.Time     `json:"expires"`
	LookupMS    float64       `json:"lookup_ms"`
	// Verified is set when the account was pinned here from an earlier
	// verified lookup, or a quorum of trusted supernodes witnessed its claim.
	Verified bool `json:"verified"`
	// Disagree is set when DHT servers named more than one account for the
	// handle; Claims then lists every account named, the chosen one first.
	Disagree bool                    `json:"disagree,omitempty"`
	Claims   []WhoisClaim            `json:"claims,omitempty"`
	Record   *discovery.HandleRecord `json:"-"`
}

// WhoisDevice is one device of a looked-up handle.
type WhoisDevice struct {
	PeerID string `json:"peer_id"`
	Name   string `json:"name,omitempty"`
}

// WhoisClaim is one account DHT servers named for a handle.
type WhoisClaim struct {
	Fingerprint string `json:"fingerprint"`
	// Servers is how many DHT servers answered with this account.
	Servers int `json:"servers"`
	// Witnesses counts its valid claim witnesses from trusted supernodes.
	Witnesses int `json:"witnesses"`
	// AttestedMS is the claim time a quorum of them attests (Unix ms); 0
	// when there is no quorum.
	AttestedMS int64 `json:"attested_ms,omitempty"`
	// Chosen marks the account this device uses for the handle.
	Chosen bool `json:"chosen,omitempty"`
}

// ErrUnverified is returned for a handle whose record no quorum of trusted
// supernodes has witnessed and that is not pinned here.
var ErrUnverified = errors.New("handle claim not verified by a quorum of supernodes")

// Resolve looks a handle up in the DHT (always fresh) and pins its key.
func (n *Node) Resolve(ctx context.Context, handle string) (*Whois, error) {
	start := n.cfg.Now()
	rec, l, err := n.lookup(ctx, handle, skipCache)
	if err != nil {
		return nil, err
	}
	w := &Whois{Handle: rec.Handle, Fingerprint: rec.Fingerprint(), Seq: rec.Seq,
		Expires: time.Unix(rec.Expires, 0).UTC(), Record: rec, Verified: true,
		LookupMS: float64(n.cfg.Now().Sub(start).Microseconds()) / 1000}
	for _, d := range rec.Devices {
		w.Devices = append(w.Devices, WhoisDevice{PeerID: d.PeerID, Name: d.Name})
	}
	if l != nil && l.Disagree() {
		w.Disagree = true
		for _, c := range l.Claims {
			wc := WhoisClaim{Fingerprint: c.Fingerprint, Servers: len(c.Servers), Witnesses: c.Rank.Witnesses,
				Chosen: bytes.Equal(c.Account, rec.Account)}
			if c.Rank.Attested {
				wc.AttestedMS = c.Rank.At
			}
			if wc.Chosen {
				w.Claims = append([]WhoisClaim{wc}, w.Claims...)
			} else {
				w.Claims = append(w.Claims, wc)
			}
		}
	}
	return w, nil
}

// lookupMode says whether a handle lookup may answer from the cache.
type lookupMode int

const (
	cacheOK   lookupMode = iota // a cached record younger than resolveCacheTTL answers
	skipCache                   // ask the DHT (and refresh the cache)
)

func (n *Node) resolve(ctx context.Context, handle string, mode lookupMode) (*discovery.HandleRecord, error) {
	rec, _, err := n.lookup(ctx, handle, mode)
	return rec, err
}

// lookup returns the record of a handle's account, verified: the account
// pinned here if one is (its record as the DHT has it; a rival account does
// not replace it), else the account whose claim a quorum of trusted
// supernodes witnessed first, which it then pins. Only verified records
// enter the cache. It returns the DHT lookup too, nil when none was made.
// Long because the cache, the DHT and the pinning decision read best as one
// sequence.
func (n *Node) lookup(ctx context.Context, handle string, mode lookupMode) (*discovery.HandleRecord, *discovery.Lookup, error) {
	now := n.cfg.Now()
	if handle == n.id.Handle() {
		rec, err := discovery.ParseHandleRecord(n.id.Record())
		return rec, nil, err
	}
	n.mu.Lock()
	c, ok := n.resolved[handle]
	n.mu.Unlock()
	if ok && mode == cacheOK && now.Sub(c.at) < resolveCacheTTL {
		return c.rec, nil, nil
	}
	if err := n.online(); err != nil {
		if mode == skipCache {
			return nil, nil, fmt.Errorf("look up %s: %w", handle, err)
		}
		// Mail can still be addressed with the record last seen, and wait
		// in the outbox.
		if rec := n.storedRecord(ctx, handle, now); rec != nil {
			return rec, nil, nil
		}
		return nil, nil, fmt.Errorf("%s is not known on this device: %w", handle, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	l, err := discovery.LookupHandle(ctx, n.dht, handle)
	switch {
	case errors.Is(err, discovery.ErrNoSuchHandle):
		n.metrics.lookups.WithLabelValues("not_found").Inc()
	default:
		n.metrics.lookups.WithLabelValues(result(err)).Inc()
	}
	if err != nil {
		if mode == cacheOK {
			// The DHT may have lost the record (a supernode back with an
			// empty disk) until its owner republishes: the signed record
			// seen last, of the pinned account, is still good while it has
			// not expired.
			if old := n.storedRecord(ctx, handle, now); old != nil {
				n.log.Debug("resolve: using the stored record", "handle", handle, "err", err)
				return old, nil, nil
			}
		}
		return nil, nil, err
	}
	pinned, err := n.store.Contact(ctx, handle)
	if err != nil {
		return nil, nil, err
	}
	var rec *discovery.HandleRecord
	var raw []byte
	switch claim := l.Of(pinned); {
	case pinned != nil && claim == nil:
		return nil, l, fmt.Errorf("%w for %s: someone else may be using this handle: the DHT names %s, pinned here is %s",
			ErrContactKeyChanged, handle, l.Best.Fingerprint(), discovery.Fingerprint(pinned))
	case pinned != nil:
		rec, raw = claim.Record, claim.Raw
		if l.Disagree() {
			n.log.Warn("DHT servers disagree on a handle; keeping the pinned account", "handle", handle,
				"pinned", discovery.Fingerprint(pinned), "accounts", len(l.Claims))
		}
	case !l.Verified:
		return nil, l, fmt.Errorf("%w: %s (%d witnesses of trusted supernodes)", ErrUnverified, handle, l.Claims[0].Rank.Witnesses)
	default:
		rec, raw = l.Best, l.Raw
	}
	if err := rec.CheckFresh(now); err != nil {
		return nil, l, err
	}
	if err := n.store.CheckContact(ctx, handle, rec.Account, now.UnixMilli()); err != nil {
		return nil, l, err
	}
	if err := n.store.SaveRecord(ctx, handle, raw, now.UnixMilli()); err != nil {
		n.log.Warn("keep resolved record", "handle", handle, "err", err)
	}
	n.mu.Lock()
	if c, ok := n.resolved[handle]; ok && bytes.Equal(c.rec.Account, rec.Account) && c.rec.Seq > rec.Seq {
		rec = c.rec // a newer record a device of the account carried
	}
	n.resolved[handle] = resolvedRecord{rec: rec, at: now}
	n.mu.Unlock()
	return rec, l, nil
}

// noteRecord keeps a record a verified device of a pinned account carried,
// when it is newer than the cached one: that is how a contact's newly
// linked devices become known before the DHT is asked again.
func (n *Node) noteRecord(rec *discovery.HandleRecord) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.resolved[rec.Handle]; ok && bytes.Equal(c.rec.Account, rec.Account) && c.rec.Seq < rec.Seq {
		n.resolved[rec.Handle] = resolvedRecord{rec: rec, at: c.at}
	}
}

// storedRecord is the record last resolved for handle, if it is still
// fresh and its account is still the pinned one; else nil.
func (n *Node) storedRecord(ctx context.Context, handle string, now time.Time) *discovery.HandleRecord {
	b, err := n.store.LoadRecord(ctx, handle)
	if err != nil || b == nil {
		return nil
	}
	rec, err := discovery.ParseHandleRecord(b)
	if err != nil || rec.Handle != handle || rec.CheckFresh(now) != nil {
		return nil
	}
	if n.store.CheckContact(ctx, handle, rec.Account, now.UnixMilli()) != nil {
		return nil
	}
	return rec
}

// cachedRecord returns the last record resolved for a handle, if any, and
// refreshes it in the background when it is stale, so a check that would
// like the current record never waits on the DHT.
func (n *Node) cachedRecord(handle string) *discovery.HandleRecord {
	n.mu.Lock()
	c, ok := n.resolved[handle]
	refresh := !ok || n.cfg.Now().Sub(c.at) > resolveCacheTTL
	if refresh {
		if n.refreshing == nil {
			n.refreshing = map[string]bool{}
		}
		refresh = !n.refreshing[handle]
		n.refreshing[handle] = true
	}
	n.mu.Unlock()
	if refresh {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if _, err := n.resolve(n.ctx, handle, skipCache); err != nil {
				// The cached record goes on serving; the next lookup
				// tries again.
				n.log.Debug("handle refresh failed", "handle", handle, "err", err)
			}
			n.mu.Lock()
			delete(n.refreshing, handle)
			n.mu.Unlock()
		}()
	}
	if !ok {
		return nil
	}
	return c.rec
}

// reserveLoop keeps a circuit relay v2 reservation at every bootstrap
// supernode, so a device behind a NAT (or a firewall) can always be reached
// at /p2p/<supernode>/p2p-circuit/p2p/<device> for signalling, whatever
// AutoNAT has or has not concluded. A reservation costs the supernode one of
// its capped slots and the device nothing but a refresh.
func (n *Node) reserveLoop() {
	defer n.wg.Done()
	next := map[peer.ID]time.Time{}
	fails := map[peer.ID]int{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		now := n.cfg.Now()
		for _, sn := range n.relays() {
			if now.Before(next[sn.ID]) {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			r, err := client.Reserve(ctx, n.host, sn)
			cancel()
			if err != nil {
				// A relay that has just started may not serve circuits yet
				// (its relay service starts once it knows it is public):
				// try again soon, then less and less often.
				n.log.Debug("relay reservation", "relay", sn.ID, "err", err)
				fails[sn.ID]++
				next[sn.ID] = now.Add(min(time.Second<<min(fails[sn.ID], 5), 30*time.Second))
				continue
			}
			fails[sn.ID] = 0
			// Renew well before it lapses (the default lifetime is an hour).
			next[sn.ID] = now.Add(max(time.Until(r.Expiration)*2/3, 30*time.Second))
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dialRanker is libp2p's default ranking of a peer's addresses, except that
// circuit addresses are dialled at once: connect decides when each is added
// to a dial, and a circuit must not wait out the default relay delay behind
// direct addresses that may never answer.
func dialRanker(addrs []ma.Multiaddr) []network.AddrDelay {
	var circuits, direct []ma.Multiaddr
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			circuits = append(circuits, a)
		} else {
			direct = append(direct, a)
		}
	}
	res := swarm.DefaultDialRanker(direct)
	for _, a := range circuits {
		res = append(res, network.AddrDelay{Addr: a})
	}
	return res
}

// circuitDelay is how long connect tries direct addresses alone before it
// also dials through the supernodes: long enough for a direct dial to a
// reachable device to win (a round trip or two), short enough not to hold
// up a message to a device behind a NAT, whose circuit is what answers.
const circuitDelay = 100 * time.Millisecond

// connect reaches a device, preferring a direct connection: a relayed one
// through a supernode's circuit is limited in time and bytes, so chat and
// linking should ride on it only when nothing else works. It dials the
// addresses in the peerstore at once and those a DHT lookup finds when the
// lookup ends; after circuitDelay it adds a circuit through every relay.
// A lookup of a device behind a NAT tries to reach the device itself and
// can take seconds, which must not hold up the relayed dial. The first
// connection wins; the other dials go on for a while (dialLinger), so a
// direct connection that comes later is there for the next stream, and
// hole punching (DCUtR) tries to turn a relayed one into a direct one.
func (n *Node) connect(ctx context.Context, id peer.ID) error {
	return n.connectAvoiding(ctx, id, circuitDelay, circuitDelay, "")
}

// connectCall is connect for a call's signalling, where every millisecond
// is heard as setup time: the first relay's circuit is dialled at once,
// beside the direct addresses, and the other relays' after circuitDelay.
// A device behind a NAT answers only through its circuit, so waiting for
// its direct dial first was 100 ms of every NATed call's setup; a
// reachable device's direct dial still usually wins (one or two round
// trips against the circuit's three or four), and when the circuit wins,
// the signalling rides it (re-opened if it dies) while the direct dial
// goes on.
func (n *Node) connectCall(ctx context.Context, id peer.ID) error {
	return n.connectAvoiding(ctx, id, 0, circuitDelay, "")
}

// dialLinger bounds how long connect's other dials go on after the first
// connection won.
const dialLinger = 10 * time.Second

// relays are the peers whose circuit relay can carry signalling: the
// supernodes, then the cloud relays (when every supernode is gone).
func (n *Node) relays() []peer.AddrInfo {
	return append(append([]peer.AddrInfo(nil), n.cfg.Bootstrap...), n.cfg.CloudRelays...)
}

// circuitsTo are the circuits to id: through the first relay, and
// through the others; none through avoid.
func (n *Node) circuitsTo(id, avoid peer.ID) (first, later []ma.Multiaddr) {
	var circuits []ma.Multiaddr
	for _, sn := range n.relays() {
		if sn.ID == id || sn.ID == avoid {
			continue
		}
		if a, err := circuitAddr(sn.ID); err == nil {
			circuits = append(circuits, a...)
		}
	}
	if len(circuits) > 1 {
		return circuits[:1], circuits[1:]
	}
	return circuits, nil
}

// firstSuccess reads count results: it yields nil at the first success,
// or all the errors joined, and calls done once the last result is in
// (the other dials go on after a success until they end).
func firstSuccess(results <-chan error, count int, done func()) <-chan error {
	outcome := make(chan error, 1)
	go func() {
		defer done()
		var errs []error
		won := false
		for range count {
			err := <-results
			switch {
			case err == nil && !won:
				won = true
				outcome <- nil
			case err != nil:
				errs = append(errs, err)
			}
		}
		if !won {
			outcome <- errors.Join(errs...)
		}
	}()
	return outcome
}

// circuitRelay is the relay of a circuit address (/p2p/RELAY/p2p-circuit/…),
// or "".
func circuitRelay(a ma.Multiaddr) peer.ID {
	if a == nil {
		return ""
	}
	var relay peer.ID
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_P2P:
			if id, err := peer.Decode(c.Value()); err == nil {
				relay = id
			}
		case ma.P_CIRCUIT:
			return relay
		}
	}
	return ""
}

// connectAvoiding is connect with the first relay's circuit after
// firstDelay, the other relays' after restDelay (0 and 0: every circuit at
// once, as when signalling must be re-opened because the path it rode
// died), and no circuit through relay avoid ("": any relay).
func (n *Node) connectAvoiding(ctx context.Context, id peer.ID, firstDelay, restDelay time.Duration, avoid peer.ID) error {
	if c := n.host.Network().Connectedness(id); c == network.Connected || c == network.Limited {
		return nil
	}
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(id)
	}
	start := time.Now()
	// The dials outlive the caller's wait by up to dialLinger; ctx's
	// values stay, its cancellation does not.
	dctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(context.WithoutCancel(ctx), "parley signalling"), dialLinger)
	first, later := n.circuitsTo(id, avoid)
	// Buffered for all four, so none blocks.
	const dials = 4
	results := make(chan error, dials)
	dial := func(addrs []ma.Multiaddr) error {
		if len(addrs) == 0 {
			return errors.New("no addresses")
		}
		return n.host.Connect(dctx, peer.AddrInfo{ID: id, Addrs: addrs})
	}
	after := func(d time.Duration, addrs []ma.Multiaddr, none string) {
		if len(addrs) == 0 {
			results <- errors.New(none)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			results <- dial(addrs)
		case <-dctx.Done():
			results <- dctx.Err()
		}
	}
	known := n.host.Peerstore().Addrs(id)
	if avoid != "" {
		known = slices.DeleteFunc(slices.Clone(known), func(a ma.Multiaddr) bool { return circuitRelay(a) == avoid })
	}
	go func() { results <- dial(known) }()
	go func() {
		fctx, fcancel := context.WithTimeout(dctx, 3*time.Second)
		defer fcancel()
		found, err := n.dht.FindPeer(fctx, id)
		if err != nil {
			results <- fmt.Errorf("DHT lookup: %w", err)
			return
		}
		results <- dial(found.Addrs)
	}()
	go after(firstDelay, first, "no relay")
	go after(restDelay, later, "no other relay")
	select {
	case err := <-firstSuccess(results, dials, cancel):
		if err != nil {
			return fmt.Errorf("reach device %s: %w", id.ShortString(), err)
		}
		n.log.Debug("device reached", "peer", id, "connectedness", n.host.Network().Connectedness(id), "took", time.Since(start))
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reach device %s: %w", id.ShortString(), ctx.Err())
	}
}

func newMessageID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// circuitAddr is the address of a peer through relay's circuit relay v2.
func circuitAddr(relay peer.ID) ([]ma.Multiaddr, error) {
	a, err := ma.NewMultiaddr("/p2p/" + relay.String() + "/p2p-circuit")
	if err != nil {
		return nil, err
	}
	return []ma.Multiaddr{a}, nil
}
