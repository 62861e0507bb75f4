package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Event is something the node tells its clients about.
type Event struct {
	Type    string    `json:"type"` // "message" or "call"
	Peer    string    `json:"peer,omitempty"`
	Message *Message  `json:"message,omitempty"`
	Call    *CallInfo `json:"call,omitempty"`
}

// eventBus fans events out to subscribers. A subscriber that does not keep
// up loses events rather than stalling the node.
type eventBus struct {
	mu     sync.Mutex
	next   int
	subs   map[int]chan Event
	closed bool
}

func newEventBus() *eventBus { return &eventBus{subs: map[int]chan Event{}} }

func (b *eventBus) subscribe() (<-chan Event, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan Event, 256)
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	id := b.next
	b.next++
	b.subs[id] = ch
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if c, ok := b.subs[id]; ok {
			delete(b.subs, id)
			close(c)
		}
	}
}

func (b *eventBus) publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func (b *eventBus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for id, ch := range b.subs {
		delete(b.subs, id)
		close(ch)
	}
}

// Subscribe returns a channel of events and a function that ends the
// subscription. The channel is closed when the node stops.
func (n *Node) Subscribe() (<-chan Event, func()) { return n.events.subscribe() }

// streamLimiter bounds the inbound streams a stranger can hold open: in
// total, per peer, and (when set) per IP address, so that identities, which
// are free, do not multiply what one address may hold.
type streamLimiter struct {
	mu      sync.Mutex // guards the fields below
	total   int
	max     int
	perPeer map[peer.ID]int
	maxPeer int
	byIP    map[string]int
	maxIP   int // 0: no per-IP limit
}

func newStreamLimiter(max, maxPeer int) *streamLimiter {
	return &streamLimiter{max: max, maxPeer: maxPeer, perPeer: map[peer.ID]int{}, byIP: map[string]int{}}
}

// perIP sets the per-IP limit.
func (l *streamLimiter) perIP(max int) *streamLimiter {
	l.maxIP = max
	return l
}

func (l *streamLimiter) acquire(p peer.ID) bool { return l.acquireFrom(p, "") }

// acquireFrom takes a slot for a stream of p arriving from ip ("" when
// unknown: only the total and per-peer limits apply).
func (l *streamLimiter) acquireFrom(p peer.ID, ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.perPeer[p] >= l.maxPeer || ip != "" && l.maxIP > 0 && l.byIP[ip] >= l.maxIP {
		return false
	}
	l.total++
	l.perPeer[p]++
	if ip != "" {
		l.byIP[ip]++
	}
	return true
}

func (l *streamLimiter) release(p peer.ID) { l.releaseFrom(p, "") }

func (l *streamLimiter) releaseFrom(p peer.ID, ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perPeer[p]--; l.perPeer[p] <= 0 {
		delete(l.perPeer, p)
	}
	if ip != "" {
		if l.byIP[ip]--; l.byIP[ip] <= 0 {
			delete(l.byIP, ip)
		}
	}
}

// remoteIP is the IP address a connection comes from (for a relayed
// connection, the relay's), or "".
func remoteIP(c network.Conn) string {
	if c == nil || c.RemoteMultiaddr() == nil {
		return ""
	}
	var ip string
	ma.ForEach(c.RemoteMultiaddr(), func(comp ma.Component) bool {
		if code := comp.Protocol().Code; code == ma.P_IP4 || code == ma.P_IP6 {
			ip = comp.Value()
			return false
		}
		return true
	})
	return ip
}
