package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
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

// streamLimiter bounds the inbound streams a stranger can hold open.
type streamLimiter struct {
	mu      sync.Mutex
	total   int
	max     int
	perPeer map[peer.ID]int
	maxPeer int
}

func newStreamLimiter(max, maxPeer int) *streamLimiter {
	return &streamLimiter{max: max, maxPeer: maxPeer, perPeer: map[peer.ID]int{}}
}

func (l *streamLimiter) acquire(p peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.perPeer[p] >= l.maxPeer {
		return false
	}
	l.total++
	l.perPeer[p]++
	return true
}

func (l *streamLimiter) release(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perPeer[p]--; l.perPeer[p] <= 0 {
		delete(l.perPeer, p)
	}
}
