package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/turncreds"
)

// Path tiers, from most to least direct. A call's media goes direct when
// the network allows, else through a supernode's TURN relay, else through an
// operator's cloud relay.
const (
	TierDirect    = "direct"
	TierSupernode = "supernode"
	TierCloud     = "cloud"
)

// Path policies (Config.Path, a call's path option). A policy is "auto"
// or a comma-separated list of tiers in the order they are preferred, such
// as "supernode,cloud"; a single tier forces it.
const (
	PathAuto      = "auto" // direct,supernode,cloud
	PathDirect    = "direct"
	PathSupernode = "supernode"
	PathCloud     = "cloud"
)

// Profiles (Config.Profile, a call's profile option).
const (
	ProfileDesktop = "desktop"
	// ProfileMobile is relay-only (no host or server-reflexive candidates:
	// fewer radios woken, no local address shown), 20 kb/s Opus with FEC and
	// DTX, and longer keepalives.
	ProfileMobile = "mobile"
)

// ErrNoRelay is returned when a policy needs a relay tier nobody offers.
var ErrNoRelay = errors.New("no relay of that tier is available")

// policy is a parsed path policy: whether direct candidates are allowed,
// and the relay tiers in the order they are preferred.
type policy struct {
	direct bool
	relays []string
}

func parsePath(path string) (policy, error) {
	if path == "" || path == PathAuto {
		return policy{direct: true, relays: []string{TierSupernode, TierCloud}}, nil
	}
	var p policy
	seen := map[string]bool{}
	for _, t := range strings.Split(path, ",") {
		t = strings.TrimSpace(t)
		if seen[t] {
			return policy{}, fmt.Errorf("path %q: %s given twice", path, t)
		}
		seen[t] = true
		switch t {
		case PathDirect:
			p.direct = true
		case PathSupernode, PathCloud:
			p.relays = append(p.relays, t)
		default:
			return policy{}, fmt.Errorf("path %q: use auto, or direct, supernode and cloud alone or in a list in the order preferred", path)
		}
	}
	return p, nil
}

func checkPolicy(path, profile string) error {
	p, err := parsePath(path)
	if err != nil {
		return err
	}
	switch profile {
	case "", ProfileDesktop, ProfileMobile:
	default:
		return fmt.Errorf("profile %q: use desktop or mobile", profile)
	}
	if profile == ProfileMobile && len(p.relays) == 0 {
		return errors.New("the mobile profile is relay-only: it needs a relay tier, not --path direct")
	}
	return nil
}

// relayCreds caches TURN credentials per relay peer until shortly before
// they expire.
type relayCreds struct {
	mu    sync.Mutex
	byPID map[peer.ID]*turncreds.Credentials
	stun  map[peer.ID][]string // the STUN URLs each supernode announced
}

func (n *Node) turnServer(ctx context.Context, relay peer.ID, refetch bool) (*webrtc.ICEServer, error) {
	n.creds.mu.Lock()
	c, ok := n.creds.byPID[relay]
	n.creds.mu.Unlock()
	if refetch || !ok || n.cfg.Now().After(c.Expires.Add(-10*time.Minute)) {
		var err error
		if c, err = turncreds.Fetch(ctx, n.host, relay); err != nil {
			return nil, err
		}
		n.creds.mu.Lock()
		if n.creds.byPID == nil {
			n.creds.byPID = map[peer.ID]*turncreds.Credentials{}
		}
		n.creds.byPID[relay] = c
		n.creds.mu.Unlock()
	}
	return &webrtc.ICEServer{URLs: c.URLs, Username: c.Username, Credential: c.Password}, nil
}

// iceSet is the ICE servers of a call and the tier of every relay in it.
type iceSet struct {
	servers []webrtc.ICEServer
	tiers   map[string]string // relay host (and host:port) -> tier
}

func (s *iceSet) add(srv webrtc.ICEServer, tier string) {
	s.servers = append(s.servers, srv)
	for _, u := range srv.URLs {
		if h, hp := urlHost(u); h != "" {
			s.tiers[h], s.tiers[hp] = tier, tier
		}
	}
}

// urlHost returns the host and host:port of a stun:/turn:/turns: URL.
func urlHost(u string) (string, string) {
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || (scheme != "stun" && scheme != "turn" && scheme != "turns") {
		return "", ""
	}
	rest, _, _ = strings.Cut(rest, "?")
	if pu, err := url.Parse("x://" + rest); err == nil {
		return pu.Hostname(), pu.Host
	}
	return "", ""
}

// tierOf names the tier of a media path.
func (s *iceSet) tierOf(p media.Path) string {
	if p.LocalType == "" {
		return "" // no pair carries the call (yet, or any more)
	}
	if !p.Relayed() {
		return TierDirect
	}
	if s == nil {
		return "relay"
	}
	// The relay's URL when media knows it, else a relayed address, which
	// is at the relay's IP. A host or reflexive address names no relay,
	// even when a relay shares its IP (on one machine in a test).
	cand := []string{p.RelayServer}
	if p.LocalType == "relay" {
		cand = append(cand, p.Local)
	}
	if p.RemoteType == "relay" {
		cand = append(cand, p.Remote)
	}
	for _, a := range cand {
		if a == "" {
			continue
		}
		h, hp := urlHost(a)
		if h == "" {
			h, _, _ = net.SplitHostPort(a)
			hp = a
		}
		if t, ok := s.tiers[hp]; ok {
			return t
		}
		if t, ok := s.tiers[h]; ok {
			return t
		}
	}
	return "relay"
}

// iceMode says what a call's ICE servers are gathered for.
type iceMode int

const (
	iceFirst   iceMode = iota // a call's first attempt: the first relay tier that has any
	iceRestart                // an ICE restart: every tier, credentials from the cache where it has them
)

const restartFetchTimeout = 1500 * time.Millisecond

func relayContext(ctx context.Context, mode iceMode) (context.Context, context.CancelFunc) {
	if mode == iceRestart {
		return context.WithTimeout(ctx, restartFetchTimeout)
	}
	return context.WithTimeout(ctx, 5*time.Second)
}

// callMedia builds a call's media configuration: the node's base, the ICE
// servers the path policy allows (the supernodes' STUN and TURN, the cloud
// relays' TURN) and the profile's codec and keepalive settings.
//
// Relay tiers are offered in the policy's order: a call's first attempt
// gets the relays of the first tier that offers any (so with auto, the
// cloud relay only when no supernode relays), since ICE ranks all relayed
// pairs alike and would otherwise pick a tier at random. An ICE restart
// (iceRestart) offers every tier of the policy, so the call moves to whatever
// still works: credentials come from the cache where it has them (a dead
// relay then just yields no candidate, without delaying the others), and
// each relay that must be asked gets at most restartFetchTimeout.
func (n *Node) callMedia(ctx context.Context, path, profile string, mode iceMode) (media.Config, *iceSet, error) {
	if path == "" {
		path = n.cfg.Path
	}
	if profile == "" {
		profile = n.cfg.Profile
	}
	if err := checkPolicy(path, profile); err != nil {
		return media.Config{}, nil, err
	}
	pol, _ := parsePath(path)
	relayOnly := profile == ProfileMobile || !pol.direct
	cfg := n.cfg.Media
	if cfg.Logger == nil {
		cfg.Logger = n.log
	}
	set := &iceSet{tiers: map[string]string{}}
	// Servers configured by hand are an operator's: STUN goes with the
	// direct tier, TURN with the cloud tier.
	var handTURN []webrtc.ICEServer
	for _, s := range cfg.ICEServers {
		if s.Username == "" {
			if !relayOnly {
				set.add(s, TierCloud)
			}
		} else {
			handTURN = append(handTURN, s)
		}
	}
	if !relayOnly {
		for _, s := range n.supernodeICE(ctx, mode) {
			set.add(s, TierSupernode)
		}
	}
	offered := false // a relay tier offered a server
	for _, tier := range pol.relays {
		if offered && mode != iceRestart {
			break
		}
		var servers []webrtc.ICEServer
		if tier == TierSupernode {
			servers = n.supernodeTURN(ctx, mode)
		} else {
			servers = append(n.cloudTURN(ctx, mode), handTURN...)
		}
		for _, s := range servers {
			set.add(s, tier)
		}
		offered = offered || len(servers) > 0
	}
	if relayOnly && !offered {
		return media.Config{}, nil, fmt.Errorf("%w: %s relay needed for --path %s --profile %s", ErrNoRelay,
			strings.Join(pol.relays, " or "), cmp.Or(path, PathAuto), cmp.Or(profile, ProfileDesktop))
	}
	cfg.ICEServers = set.servers
	cfg.RelayOnly = relayOnly

	if profile == ProfileMobile {
		// Fewer keepalives save the radio; what the node was configured
		// with explicitly stays.
		cfg.Bitrate, cfg.FEC, cfg.DTX = 20000, true, true
		cfg.KeepaliveInterval = cmp.Or(cfg.KeepaliveInterval, 10*time.Second)
		cfg.DisconnectedTimeout = cmp.Or(cfg.DisconnectedTimeout, 10*time.Second)
		cfg.FailedTimeout = cmp.Or(cfg.FailedTimeout, 30*time.Second)
	}
	// Audio flows every 20 ms: 1.5 silent seconds mean the path is gone,
	// and the call restarts ICE (see watchMedia). ICE looks every keepalive
	// interval, so half a second keeps the detection within 1.5-2 s, and
	// the whole outage under the 3 s target.
	cfg.DisconnectedTimeout = cmp.Or(cfg.DisconnectedTimeout, 1500*time.Millisecond)
	cfg.KeepaliveInterval = cmp.Or(cfg.KeepaliveInterval, 500*time.Millisecond)
	return cfg, set, nil
}

// supernodeTURN returns the TURN servers of the supernodes this node is
// connected to: the supernode relay tier.
func (n *Node) supernodeTURN(ctx context.Context, mode iceMode) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, sn := range n.cfg.Bootstrap {
		if n.host.Network().Connectedness(sn.ID) != network.Connected {
			continue
		}
		sctx, cancel := relayContext(ctx, mode)
		srv, err := n.turnServer(sctx, sn.ID, false)
		cancel()
		if err != nil {
			n.log.Debug("supernode TURN", "supernode", sn.ID, "err", err)
			continue
		}
		out = append(out, *srv)
	}
	return out
}

// cloudTURN returns the TURN servers of the configured cloud relays that
// answer: the cloud relay tier. On an ICE restart a relay this node
// is not connected to is left out rather than waited for; cloudLoop keeps
// reconnecting it.
func (n *Node) cloudTURN(ctx context.Context, mode iceMode) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, r := range n.cfg.CloudRelays {
		connected := n.host.Network().Connectedness(r.ID) == network.Connected
		if mode == iceRestart && !connected {
			continue
		}
		srv, err := n.cloudRelay(ctx, r, mode)
		if err != nil {
			n.log.Info("cloud relay unavailable", "relay", r.ID, "err", err)
			continue
		}
		out = append(out, *srv)
	}
	return out
}

// cloudRelay connects to a cloud relay and returns its TURN server with
// credentials. A relay reached anew may have restarted: it is asked again
// rather than trusted with credentials it handed out before.
func (n *Node) cloudRelay(ctx context.Context, r peer.AddrInfo, mode iceMode) (*webrtc.ICEServer, error) {
	ctx, cancel := relayContext(ctx, mode)
	defer cancel()
	reconnected := n.host.Network().Connectedness(r.ID) != network.Connected
	if err := n.host.Connect(ctx, r); err != nil {
		return nil, err
	}
	n.host.ConnManager().Protect(r.ID, "parley cloud relay")
	return n.turnServer(ctx, r.ID, reconnected)
}

// cloudLoop keeps the node connected to its cloud relays with credentials
// in hand, so the cloud tier is ready the moment a call's ICE restart
// needs it.
func (n *Node) cloudLoop() {
	defer n.wg.Done()
	if len(n.cfg.CloudRelays) == 0 {
		return
	}
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		for _, r := range n.cfg.CloudRelays {
			if _, err := n.cloudRelay(n.ctx, r, iceFirst); err != nil && n.ctx.Err() == nil {
				n.log.Debug("cloud relay", "relay", r.ID, "err", err)
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// supernodeICE asks the connected supernodes for their STUN servers; on an
// ICE restart it uses their last answers instead.
func (n *Node) supernodeICE(ctx context.Context, mode iceMode) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, sn := range n.cfg.Bootstrap {
		if n.host.Network().Connectedness(sn.ID) != network.Connected {
			continue
		}
		var urls []string
		if mode == iceRestart {
			// An ICE restart does not wait on a supernode that may be the
			// thing that died: it takes what the supernode said last.
			n.creds.mu.Lock()
			urls = n.creds.stun[sn.ID]
			n.creds.mu.Unlock()
		} else {
			var err error
			if urls, err = discovery.QueryServices(ctx, n.host, sn.ID); err != nil {
				n.log.Debug("supernode services", "supernode", sn.ID, "err", err)
				continue
			}
			n.creds.mu.Lock()
			if n.creds.stun == nil {
				n.creds.stun = map[peer.ID][]string{}
			}
			n.creds.stun[sn.ID] = urls
			n.creds.mu.Unlock()
		}
		if len(urls) > 0 {
			out = append(out, webrtc.ICEServer{URLs: urls})
		}
	}
	return out
}
