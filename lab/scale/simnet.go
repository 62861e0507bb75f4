package scale

import (
	"crypto/rand"
	"fmt"
	"sync"
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

	// mu guards the fields below; it is never held while calling into a
	// host, only into mocknet's link bookkeeping.
	mu     sync.RWMutex
	links  map[[2]peer.ID]mocknet.Link
	byPeer map[peer.ID][][2]peer.ID
	dead   map[peer.ID]bool
	next   uint32
}

func newSimnet(latency time.Duration) *simnet {
	mn := mocknet.New()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	return &simnet{mn: mn, links: map[[2]peer.ID]mocknet.Link{}, byPeer: map[peer.ID][][2]peer.ID{}, dead: map[peer.ID]bool{}}
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
	s.mu.Lock()
	s.next++
	n := s.next
	s.mu.Unlock()
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
	if a == b {
		return
	}
	k := pairOf(a, b)
	s.mu.RLock()
	done := s.dead[a] || s.dead[b] || s.links[k] != nil
	s.mu.RUnlock()
	if done {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead[a] || s.dead[b] || s.links[k] != nil {
		return
	}
	l, err := s.mn.LinkPeers(a, b)
	if err != nil {
		return // b is not (or no longer) on the network: the dial fails
	}
	s.links[k] = l
	s.byPeer[a] = append(s.byPeer[a], k)
	s.byPeer[b] = append(s.byPeer[b], k)
}

// leave takes h off the network: it is closed and unlinked, and nobody can
// link to it again.
func (s *simnet) leave(h host.Host) {
	id := h.ID()
	s.mu.Lock()
	s.dead[id] = true
	s.mu.Unlock()
	h.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.byPeer[id] {
		if l := s.links[k]; l != nil {
			s.mn.Unlink(l)
			delete(s.links, k)
		}
	}
	delete(s.byPeer, id)
}

// linkCount is how many links exist.
func (s *simnet) linkCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.links)
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
