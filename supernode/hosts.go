package supernode

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
)

// Joining timing: a supernode that reaches no other retries after
// minJoinBackoff, doubling up to maxJoinBackoff, each wait ±20 %, and
// records the supernodes it is connected to in its host cache every
// hostCacheInterval.
const (
	minJoinBackoff    = time.Second
	maxJoinBackoff    = 60 * time.Second
	hostCacheInterval = 30 * time.Second
	joinTimeout       = 15 * time.Second
)

// knownSupernodes are --bootstrap, then the host cache's peers.
func (s *Supernode) knownSupernodes() []peer.AddrInfo {
	var cached []peer.AddrInfo
	if s.hosts != nil {
		for _, ai := range s.hosts.Peers() {
			if ai.ID != s.host.ID() {
				cached = append(cached, ai)
			}
		}
	}
	return discovery.MergePeers(s.cfg.Bootstrap, cached)
}

// connectedSupernodes counts the other DHT servers this one is connected to.
func (s *Supernode) connectedSupernodes() int {
	c := 0
	for _, p := range s.dht.RoutingTable().ListPeers() {
		if s.host.Network().Connectedness(p) == network.Connected {
			c++
		}
	}
	return c
}

// joinLoop keeps this supernode joined to the others it knows of: whenever
// it is connected to none, it dials them all with jittered exponential
// backoff; a supernode that finds no other serves alone meanwhile.
func (s *Supernode) joinLoop() {
	defer s.wg.Done()
	backoff := minJoinBackoff
	next := time.Now()
	lastSave := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.saveHosts()
			return
		case <-t.C:
		}
		now := time.Now()
		if now.Sub(lastSave) >= hostCacheInterval {
			lastSave = now
			s.saveHosts()
		}
		peers := s.knownSupernodes()
		if len(peers) == 0 || s.connectedSupernodes() > 0 {
			backoff = minJoinBackoff
			continue
		}
		if now.Before(next) {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, joinTimeout)
		_, err := discovery.Bootstrap(ctx, s.host, peers, joinTimeout)
		cancel()
		if err == nil {
			s.cfg.Logger.Info("joined other supernodes")
			if bs := s.dht.RefreshRoutingTable(); bs != nil {
				// Refresh is asynchronous; its result does not matter here.
				go func() { <-bs }()
			}
			s.saveHosts()
			backoff = minJoinBackoff
			continue
		}
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		next = now.Add(wait)
		s.cfg.Logger.Warn("no other supernode reachable; serving alone", "err", err, "retry_in", wait.Round(time.Millisecond))
		backoff = min(2*backoff, maxJoinBackoff)
	}
}

// saveHosts records the connected supernodes in the host cache.
func (s *Supernode) saveHosts() {
	if s.hosts == nil {
		return
	}
	for _, p := range s.dht.RoutingTable().ListPeers() {
		if s.host.Network().Connectedness(p) == network.Connected {
			s.hosts.Seen(peer.AddrInfo{ID: p, Addrs: s.host.Peerstore().Addrs(p)}, time.Now())
		}
	}
	if err := s.hosts.Save(); err != nil {
		s.cfg.Logger.Warn("save host cache", "err", err)
	}
}
