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

	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/media"
)

// Path tiers, from most to least direct. A call's media goes direct when
// the network allows, else through a supernode's TURN relay, else through an
// operator's cloud relay.
const (
	TierDirect    = "direct"
	TierSupernode = "supernode"
	TierCloud     = "cloud"
)

// Path policies (Config.Path, a call's path option).
const (
	PathAuto      = "auto"
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

func checkPolicy(path, profile string) error {
	switch path {
	case "", PathAuto, PathDirect, PathSupernode, PathCloud:
	default:
		return fmt.Errorf("path %q: use auto, direct, supernode or cloud", path)
	}
	switch profile {
	case "", ProfileDesktop, ProfileMobile:
	default:
		return fmt.Errorf("profile %q: use desktop or mobile", profile)
	}
	if profile == ProfileMobile && path == PathDirect {
		return errors.New("the mobile profile is relay-only: it cannot use --path direct")
	}
	return nil
}

// relayCreds caches TURN credentials per relay peer until shortly before
// they expire.
type relayCreds struct {
	mu    sync.Mutex
	byPID map[peer.ID]*turnrelay.Credentials
}

func (n *Node) turnServer(ctx context.Context, relay peer.ID, fresh bool) (*webrtc.ICEServer, error) {
	n.creds.mu.Lock()
	c, ok := n.creds.byPID[relay]
	n.creds.mu.Unlock()
	if fresh || !ok || n.cfg.Now().After(c.Expires.Add(-10*time.Minute)) {
		var err error
		if c, err = turnrelay.FetchCredentials(ctx, n.host, relay); err != nil {
			return nil, err
		}
		n.creds.mu.Lock()
		if n.creds.byPID == nil {
			n.creds.byPID = map[peer.ID]*turnrelay.Credentials{}
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
	// The relay's URL when media knows it, else the relayed address, which
	// is at the relay's IP.
	for _, a := range []string{p.RelayServer, p.Local, p.Remote} {
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

const restartFetchTimeout = 1500 * time.Millisecond

func relayContext(ctx context.Context, fresh bool) (context.Context, context.CancelFunc) {
	if fresh {
		return context.WithTimeout(ctx, restartFetchTimeout)
	}
	return context.WithTimeout(ctx, 5*time.Second)
}

// callMedia builds a call's media configuration: the node's base, the ICE
// servers the path policy allows (the supernodes' STUN and TURN, the cloud
// relays' TURN) and the profile's codec and keepalive settings.
//
// On an ICE restart (fresh) every relay is asked again, each for at most
// restartFetchTimeout, so a relay that died is left out of the new attempt.
func (n *Node) callMedia(ctx context.Context, path, profile string, fresh bool) (media.Config, *iceSet, error) {
	if path == "" {
		path = n.cfg.Path
	}
	if profile == "" {
		profile = n.cfg.Profile
	}
	if err := checkPolicy(path, profile); err != nil {
		return media.Config{}, nil, err
	}
	cfg := n.cfg.Media
	if cfg.Logger == nil {
		cfg.Logger = n.log
	}
	set := &iceSet{tiers: map[string]string{}}
	for _, s := range cfg.ICEServers {
		set.add(s, TierCloud) // configured by hand: an operator's
	}
	relayOnly := profile == ProfileMobile || path == PathSupernode || path == PathCloud
	if !relayOnly {
		for _, s := range n.supernodeICE(ctx) {
			set.add(s, TierSupernode)
		}
	}
	wantSN := path == PathAuto || path == "" || path == PathSupernode
	wantCloud := path == PathAuto || path == "" || path == PathCloud
	if wantSN {
		for _, sn := range n.cfg.Bootstrap {
			if n.host.Network().Connectedness(sn.ID) != network.Connected {
				continue
			}
			sctx, cancel := relayContext(ctx, fresh)
			srv, err := n.turnServer(sctx, sn.ID, fresh)
			cancel()
			if err == nil {
				set.add(*srv, TierSupernode)
			} else {
				n.log.Debug("supernode TURN", "supernode", sn.ID, "err", err)
			}
		}
	}
	if wantCloud {
		for _, r := range n.cfg.CloudRelays {
			cctx, cancel := relayContext(ctx, fresh)
			err := n.host.Connect(cctx, r)
			var srv *webrtc.ICEServer
			if err == nil {
				srv, err = n.turnServer(cctx, r.ID, fresh)
			}
			cancel()
			if err != nil {
				n.log.Info("cloud relay unavailable", "relay", r.ID, "err", err)
				continue
			}
			set.add(*srv, TierCloud)
		}
	}
	if relayOnly && len(set.servers) == 0 {
		tier := path
		if tier == "" || tier == PathAuto {
			tier = "supernode or cloud"
		}
		return media.Config{}, nil, fmt.Errorf("%w: %s relay needed for --path %s --profile %s", ErrNoRelay, tier, path, profile)
	}
	if path == PathDirect {
		// Direct only: host and server-reflexive candidates, no relay.
		var stun []webrtc.ICEServer
		for _, s := range set.servers {
			if s.Username == "" {
				stun = append(stun, s)
			}
		}
		set.servers = stun
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
	// Audio flows every 20 ms: two silent seconds mean the path is gone, and
	// the call restarts ICE (see watchMedia).
	cfg.DisconnectedTimeout = cmp.Or(cfg.DisconnectedTimeout, 2*time.Second)
	return cfg, set, nil
}
