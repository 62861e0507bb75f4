package scale

import (
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// simnet is go-libp2p's in-memory mock network with links made on demand.
//
// mocknet only connects two peers that share a link, and LinkAll makes
// n²/2 of them up front: 8 million links (gigabytes) at 4,000 nodes. Here a
// host's peerstore links it to a peer the moment it learns one of that
// peer's addresses (the DHT always stores an address before it dials), so
// every live peer stays reachable from every other, as on the internet,
// and only links that are used exist. Every link has the same one-way
// latency. A peer that left (leave) is unlinked and never linked again, so
// dialling it fails like dialling a dead machine.
type simnet struct {
	mn mocknet.Mocknet

	// links holds a *simlink per pair of peers that has (or is getting) a
	// link; read without a lock, since every address learned looks here.
	links sync.Map
	// dead holds the peers that left (peer.ID → true), read without a lock.
	dead sync.Map

	// mu guards byPeer and makes leaving and linking exclusive; it is
	// never held while calling into a host.
	mu     sync.Mutex
	byPeer map[peer.ID][][2]peer.ID
	next   atomic.Uint32
}

// simlink is one pair's link, made once.
type simlink struct {
	once sync.Once
	l    mocknet.Link
}

func newSimnet(latency time.Duration) *simnet {
	mn := mocknet.New()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	return &simnet{mn: mn, byPeer: map[peer.ID][][2]peer.ID{}}
}

// newHost adds a host with a fresh Ed25519 identity (parley's key type)
// and a unique address in 10.0.0.0/8.
func (s *simnet) newHost() (host.Host, error) {
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return nil, err
	}
	n := s.next.Add(1)
	addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4100", byte(n>>16), byte(n>>8), byte(n)))
	if err != nil {
		return nil, err
	}
	inner, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, err
	}
	if err := inner.AddPrivKey(id, sk); err != nil {
		return nil, err
	}
	if err := inner.AddPubKey(id, sk.GetPublic()); err != nil {
		return nil, err
	}
	inner.AddAddr(id, addr, peerstore.PermanentAddrTTL)
	return s.mn.AddPeerWithPeerstore(id, &linkingPeerstore{Peerstore: inner, self: id, net: s})
}

func pairOf(a, b peer.ID) [2]peer.ID {
	if a < b {
		return [2]peer.ID{a, b}
	}
	return [2]peer.ID{b, a}
}

// link makes sure a and b share a link, unless either has left.
func (s *simnet) link(a, b peer.ID) {
	if a == b || s.isDead(a) || s.isDead(b) {
		return
	}
	k := pairOf(a, b)
	v, _ := s.links.LoadOrStore(k, &simlink{})
	sl := v.(*simlink)
	sl.once.Do(func() {
		l, err := s.mn.LinkPeers(a, b)
		if err != nil {
			s.links.Delete(k) // b is not (or no longer) on the network
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.isDead(a) || s.isDead(b) {
			s.mn.Unlink(l)
			s.links.Delete(k)
			return
		}
		sl.l = l
		s.byPeer[a] = append(s.byPeer[a], k)
		s.byPeer[b] = append(s.byPeer[b], k)
	})
}

func (s *simnet) isDead(p peer.ID) bool {
	_, ok := s.dead.Load(p)
	return ok
}

// leave takes h off the network: it is closed and unlinked, and nobody can
// link to it again.
func (s *simnet) leave(h host.Host) {
	id := h.ID()
	s.mu.Lock()
	s.dead.Store(id, true)
	s.mu.Unlock()
	h.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.byPeer[id] {
		if v, ok := s.links.LoadAndDelete(k); ok && v.(*simlink).l != nil {
			s.mn.Unlink(v.(*simlink).l)
		}
	}
	delete(s.byPeer, id)
}

// setLatency gives every link, and every link made from now on, a one-way
// delay of d.
func (s *simnet) setLatency(d time.Duration) {
	o := mocknet.LinkOptions{Latency: d}
	s.mn.SetLinkDefaults(o)
	s.links.Range(func(_, v any) bool {
		sl := v.(*simlink)
		sl.once.Do(func() {}) // wait for a link being made
		if sl.l != nil {
			sl.l.SetOptions(o)
		}
		return true
	})
}

// linkCount is how many links exist.
func (s *simnet) linkCount() int {
	n := 0
	s.links.Range(func(any, any) bool { n++; return true })
	return n
}

func (s *simnet) close() error { return s.mn.Close() }

// linkingPeerstore is a host's peerstore that links the host to every peer
// whose address it learns (see simnet).
type linkingPeerstore struct {
	peerstore.Peerstore
	self peer.ID
	net  *simnet
}

func (p *linkingPeerstore) AddAddr(id peer.ID, a ma.Multiaddr, ttl time.Duration) {
	p.net.link(p.self, id)
	p.Peerstore.AddAddr(id, a, ttl)
}

func (p *linkingPeerstore) AddAddrs(id peer.ID, as []ma.Multiaddr, ttl time.Duration) {
	if len(as) > 0 {
		p.net.link(p.self, id)
	}
	p.Peerstore.AddAddrs(id, as, ttl)
}

func (p *linkingPeerstore) SetAddr(id peer.ID, a ma.Multiaddr, ttl time.Duration) {
	p.net.link(p.self, id)
	p.Peerstore.SetAddr(id, a, ttl)
}

func (p *linkingPeerstore) SetAddrs(id peer.ID, as []ma.Multiaddr, ttl time.Duration) {
	if len(as) > 0 && ttl > 0 {
		p.net.link(p.self, id)
	}
	p.Peerstore.SetAddrs(id, as, ttl)
}
