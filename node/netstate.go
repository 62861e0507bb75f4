package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	kb "github.com/libp2p/go-libp2p-kbucket"

	"github.com/parley-net/parley/discovery"
)

// Connectivity timing. A device offline retries joining after
// minJoinBackoff, doubling up to maxJoinBackoff, each wait ±20 %; a
// supernode it knew and lost is redialled on the same schedule. The handle
// record is republished when the device comes online, when a supernode it
// knew comes back (it may have lost its disk), when a supernode it had not
// seen becomes one of the closest to the record's key (checked locally
// every closestCheckEvery), and otherwise every RepublishInterval ±20 %.
const (
	minJoinBackoff    = time.Second
	maxJoinBackoff    = 60 * time.Second
	backoffJitter     = 0.2
	netTick           = time.Second
	closestCheckEvery = 2 // ticks
	// hostCacheSaveEvery bounds how often the host cache is written.
	hostCacheSaveEvery = 30 // ticks
	// absentForget is how long a lost supernode is redialled before it is
	// left to the host cache and the DHT.
	absentForget = time.Hour
)

// ErrOffline is returned for what needs the network while no supernode is
// reachable; the message says what was tried.
var ErrOffline = errors.New("offline: no supernode reachable")

// netState is the device's connectivity.
type netState int

const (
	stateOffline netState = iota
	stateOnline
)

func (s netState) String() string {
	if s == stateOnline {
		return "online"
	}
	return "offline"
}

// netSnapshot is what Status and resolve read of the state netLoop owns.
type netSnapshot struct {
	state  netState
	since  time.Time
	reason string // why offline; "" online
}

// netView is the node's published connectivity. mu guards snap; netLoop
// is its only writer.
type netView struct {
	mu   sync.Mutex
	snap netSnapshot
}

func (v *netView) get() netSnapshot {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.snap
}

func (v *netView) set(s netSnapshot) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.snap = s
}

// online reports whether the node reached a supernode, and if not, an
// error wrapping ErrOffline that says why.
func (n *Node) online() error {
	s := n.net.get()
	if s.state == stateOnline {
		return nil
	}
	return fmt.Errorf("%w (%s)", ErrOffline, s.reason)
}

// jitter spreads d by ±frac, with r a uniform sample in [0, 1).
func jitter(d time.Duration, frac, r float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*r))
}

// nextBackoff doubles d within [minJoinBackoff, maxJoinBackoff].
func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, minJoinBackoff), maxJoinBackoff)
}

// bootstrapPeers are the --bootstrap supernodes, then the host cache's.
func (n *Node) bootstrapPeers() []peer.AddrInfo {
	if n.hosts == nil {
		return n.cfg.Bootstrap
	}
	return discovery.MergePeers(n.cfg.Bootstrap, n.hosts.Peers())
}

// join connects to the bootstrap supernodes and waits for a DHT server in
// the routing table.
func (n *Node) join(ctx context.Context) error {
	peers := n.bootstrapPeers()
	if len(peers) == 0 {
		return fmt.Errorf("%w: no --bootstrap address and an empty host cache", discovery.ErrNoBootstrap)
	}
	start := time.Now()
	if _, err := discovery.Bootstrap(ctx, n.host, peers, n.cfg.BootstrapTimeout); err != nil {
		return err
	}
	if err := discovery.WaitRoutable(ctx, n.dht); err != nil {
		return fmt.Errorf("join the parley DHT: connected, but no DHT server after %s: %w", time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}

// isSupernode reports whether p is a DHT server this node knows of.
func (n *Node) isSupernode(p peer.ID) bool {
	if n.dht.RoutingTable().Find(p) != "" {
		return true
	}
	for _, b := range n.cfg.Bootstrap {
		if b.ID == p {
			return true
		}
	}
	return false
}

// supernodesConnected counts the DHT servers the node is connected to.
func (n *Node) supernodesConnected() int {
	c := 0
	for _, p := range n.dht.RoutingTable().ListPeers() {
		if n.host.Network().Connectedness(p) == network.Connected {
			c++
		}
	}
	return c
}

// closestToMe are the routing table's peers closest to the handle record's
// key: the supernodes a publish stores it at.
func (n *Node) closestToMe() map[peer.ID]bool {
	key := kb.ConvertKey(discovery.HandleKey(n.id.Handle()))
	out := map[peer.ID]bool{}
	for _, p := range n.dht.RoutingTable().NearestPeers(key, 20) {
		out[p] = true
	}
	return out
}

// absentPeer is a supernode the node was connected to and lost.
type absentPeer struct {
	since, next time.Time
	backoff     time.Duration
}

// netLoop owns the node's connectivity state: it alone moves it between
// offline and online, retries joining with jittered backoff, redials lost
// supernodes, republishes the handle record, and keeps the host cache.
// Slow work (joining, publishing, dialling) runs in goroutines that post
// their result back, so connectedness events are always drained.
// Long on purpose: it is the network state machine's one goroutine, and
// every transition stays in its one select (STYLE.md).
func (n *Node) netLoop(state netState, reason string, publishNow bool) {
	defer n.wg.Done()
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged), eventbus.BufSize(256))
	if err != nil {
		n.log.Error("connectivity events", "err", err)
		return
	}
	defer sub.Close()
	rnd := rand.Float64
	now := n.cfg.Now

	backoff := minJoinBackoff
	var retryAt time.Time // when offline: the next join attempt
	attemptDone := make(chan error, 1)
	attempting := false
	publishDone := make(chan error, 1)
	publishing, publishAgain := false, false
	nextRepublish := now().Add(jitter(n.cfg.RepublishInterval, backoffJitter, rnd()))
	lastClosest := map[peer.ID]bool{}
	absent := map[peer.ID]*absentPeer{}
	ticks := 0

	set := func(s netState, why string) {
		if s != state || why != reason || n.net.get().since.IsZero() {
			n.net.set(netSnapshot{state: s, since: now(), reason: why})
		}
		state, reason = s, why
	}
	startAttempt := func() {
		if attempting {
			return
		}
		attempting = true
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.BootstrapTimeout)
			defer cancel()
			attemptDone <- n.join(ctx)
		}()
	}
	startPublish := func(why string) {
		if state != stateOnline {
			return
		}
		if publishing {
			publishAgain = true
			return
		}
		publishing = true
		lastClosest = n.closestToMe()
		nextRepublish = now().Add(jitter(n.cfg.RepublishInterval, backoffJitter, rnd()))
		n.log.Debug("republish handle", "why", why)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
			defer cancel()
			publishDone <- n.publish(ctx)
		}()
	}
	goOnline := func() {
		backoff = minJoinBackoff
		set(stateOnline, "")
		n.log.Info("online", "supernodes", n.supernodesConnected())
		n.saveHosts()
		startPublish("online")
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.FetchMailbox(n.ctx)
		}()
		// Devices that were unreachable while this one was offline may be
		// reachable now: dial them again before leaving mail in mailboxes.
		n.unreachable.Clear()
		if c, err := n.store.RetryNow(n.ctx, now().UnixMilli()); err == nil && c > 0 {
			n.log.Info("outbox retried now that the network is back", "envelopes", c)
		}
		n.kickOutbox()
	}
	goOffline := func(why string) {
		set(stateOffline, why)
		retryAt = now().Add(jitter(backoff, backoffJitter, rnd()))
		n.log.Warn("offline", "reason", why, "retry_in", retryAt.Sub(now()).Round(time.Millisecond))
		backoff = nextBackoff(backoff)
	}

	if state == stateOnline {
		set(stateOnline, "")
		if publishNow {
			startPublish("start")
		} else {
			lastClosest = n.closestToMe()
		}
	} else {
		goOffline(reason)
	}
	t := time.NewTicker(netTick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			n.saveHosts()
			return
		case e := <-sub.Out():
			ev := e.(event.EvtPeerConnectednessChanged)
			switch {
			case ev.Connectedness == network.Connected && state == stateOffline:
				startAttempt() // someone answered: perhaps a supernode
			case ev.Connectedness == network.Connected:
				if _, ok := absent[ev.Peer]; ok {
					delete(absent, ev.Peer)
					startPublish("a supernode came back")
				}
			case ev.Connectedness == network.NotConnected && n.isSupernode(ev.Peer):
				if len(absent) < 2*discovery.DefaultHostCacheSize {
					absent[ev.Peer] = &absentPeer{since: now(), next: now().Add(jitter(minJoinBackoff, backoffJitter, rnd())), backoff: minJoinBackoff}
				}
				if state == stateOnline && n.supernodesConnected() == 0 {
					goOffline("lost every supernode")
				}
			}
		case err := <-attemptDone:
			attempting = false
			switch {
			case err == nil && state == stateOffline:
				goOnline()
			case err != nil && state == stateOffline:
				goOffline(err.Error())
			}
		case err := <-publishDone:
			publishing = false
			if err != nil && n.ctx.Err() == nil {
				n.log.Warn("publish handle", "err", err)
				// Try again soon rather than at the next interval.
				nextRepublish = now().Add(jitter(10*time.Second, backoffJitter, rnd()))
			}
			if publishAgain {
				publishAgain = false
				startPublish("changed while publishing")
			}
		case <-t.C:
			ticks++
			at := now()
			if state == stateOffline && !attempting && !at.Before(retryAt) {
				startAttempt()
			}
			for p, a := range absent {
				if at.Sub(a.since) > absentForget {
					delete(absent, p)
					continue
				}
				if at.Before(a.next) || n.host.Network().Connectedness(p) == network.Connected {
					continue
				}
				a.backoff = nextBackoff(a.backoff)
				a.next = at.Add(jitter(a.backoff, backoffJitter, rnd()))
				n.redial(p)
			}
			if state == stateOnline && !at.Before(nextRepublish) {
				startPublish("interval")
			}
			if state == stateOnline && ticks%closestCheckEvery == 0 {
				for p := range n.closestToMe() {
					if !lastClosest[p] {
						startPublish("new supernode among the closest")
						break
					}
				}
			}
			if ticks%hostCacheSaveEvery == 0 {
				n.saveHosts()
			}
		}
	}
}

// redial tries once to reconnect to a lost supernode; success shows up as
// a connectedness event.
func (n *Node) redial(p peer.ID) {
	addrs := n.host.Peerstore().Addrs(p)
	if len(addrs) == 0 {
		for _, b := range n.bootstrapPeers() {
			if b.ID == p {
				addrs = b.Addrs
			}
		}
	}
	if len(addrs) == 0 {
		return
	}
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		if err := n.host.Connect(ctx, peer.AddrInfo{ID: p, Addrs: addrs}); err != nil {
			// netLoop learns the outcome from the connectedness events
			// and redials on its own schedule.
			n.log.Debug("supernode redial failed", "peer", p, "err", err)
		}
	}()
}

// saveHosts records the connected supernodes in the host cache and writes
// it if it changed.
func (n *Node) saveHosts() {
	if n.hosts == nil {
		return
	}
	now := n.cfg.Now()
	for _, p := range n.dht.RoutingTable().ListPeers() {
		if n.host.Network().Connectedness(p) == network.Connected {
			n.hosts.Seen(peer.AddrInfo{ID: p, Addrs: n.host.Peerstore().Addrs(p)}, now)
		}
	}
	if err := n.hosts.Save(); err != nil {
		n.log.Warn("save host cache", "err", err)
	}
}

// offlineReason trims a join error for Status.
func offlineReason(err error) string {
	return strings.TrimSpace(err.Error())
}
