package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-msgio/pbio"
	msmux "github.com/multiformats/go-multistream"
)

// Limits of one walk.
const (
	walkAlpha       = 20  // requests in flight: all of the k closest at once
	walkBeta        = 3   // closest servers whose answers end the walk, as kad-dht's resiliency
	maxWalkRequests = 120 // requests of one walk, whatever its answers name
	maxCloserPeers  = 2 * maxLookupPeers
	maxPeerAddrs    = 8 // addresses kept of one server an answer names
)

// walkAnswer is one server's answer to a walk: the value it holds under the
// key, nil when it has none. The value is not validated yet.
type walkAnswer struct {
	p   peer.ID
	raw []byte
}

// Where a server stands in a walk.
type walkState int

const (
	walkHeard walkState = iota
	walkWaiting
	walkAnswered
	walkFailed
)

type walkPeer struct {
	id    peer.ID
	dist  []byte // XOR distance to the key
	state walkState
	raw   []byte
}

// walk is the bookkeeping of one Kademlia lookup: the servers heard of,
// closest to the key first, and where each stands. It does no I/O.
//
// It ends as kad-dht's lookup with its follow-up does: once the beta
// closest servers it knows have answered (it has converged), it asks the k
// closest it knows then that it has not asked yet, once, and does not chase
// the servers their answers name.
type walk struct {
	self    peer.ID
	target  kb.ID
	k, beta int
	peers   []*walkPeer // sorted by dist
	byID    map[peer.ID]*walkPeer
	asked   int
	// follow is the k closest when the walk converged; nil before.
	follow []*walkPeer
	// also are servers asked whatever their distance, and whose answers
	// count beside the k closest' (a lookup's trusted supernodes).
	also []*walkPeer
}

func newWalk(self peer.ID, key string, k, beta int) *walk {
	return &walk{self: self, target: kb.ConvertKey(key), k: k, beta: beta, byID: map[peer.ID]*walkPeer{}}
}

// hear adds servers the walk has heard of; it reports how many were new.
func (w *walk) hear(ids ...peer.ID) int {
	n := 0
	for _, id := range ids {
		if id == w.self || id == "" || w.byID[id] != nil {
			continue
		}
		wp := &walkPeer{id: id, dist: kb.Xor(w.target, kb.ConvertPeerID(id))}
		w.byID[id] = wp
		w.peers = append(w.peers, wp)
		n++
	}
	if n > 0 {
		sort.Slice(w.peers, func(i, j int) bool { return bytes.Compare(w.peers[i].dist, w.peers[j].dist) < 0 })
	}
	return n
}

// hearAlso adds servers to ask first, whatever their distance, and to
// weigh beside the k closest.
func (w *walk) hearAlso(ids ...peer.ID) {
	w.hear(ids...)
	for _, id := range ids {
		if wp := w.byID[id]; wp != nil && !slices.Contains(w.also, wp) {
			w.also = append(w.also, wp)
		}
	}
}

// closest returns the n closest servers that have not failed.
func (w *walk) closest(n int) []*walkPeer {
	var out []*walkPeer
	for _, wp := range w.peers {
		if len(out) == n {
			break
		}
		if wp.state != walkFailed {
			out = append(out, wp)
		}
	}
	return out
}

// next marks up to n servers not yet asked as asked and returns them,
// closest first, within maxWalkRequests: among the k closest before the
// walk has converged, among those it follows up after.
func (w *walk) next(n int) []peer.ID {
	candidates := w.follow
	if candidates == nil {
		candidates = w.closest(w.k)
	}
	candidates = append(slices.Clip(w.also), candidates...)
	var out []peer.ID
	for _, wp := range candidates {
		if len(out) == n || w.asked == maxWalkRequests {
			break
		}
		if wp.state == walkHeard {
			wp.state = walkWaiting
			w.asked++
			out = append(out, wp.id)
		}
	}
	return out
}

// done reports whether the walk has converged and every server it follows
// up, and every server it asks also, has answered or failed. The first
// time the beta closest servers it knows have all answered, it fixes the
// follow-up.
func (w *walk) done() bool {
	if w.follow == nil {
		for _, wp := range w.closest(w.beta) {
			if wp.state != walkAnswered {
				return false
			}
		}
		w.follow = w.closest(w.k)
	}
	for _, wp := range append(slices.Clip(w.follow), w.also...) {
		if wp.state == walkHeard || wp.state == walkWaiting {
			return false
		}
	}
	return true
}

func (w *walk) answered(p peer.ID, raw []byte) {
	if wp := w.byID[p]; wp != nil {
		wp.state, wp.raw = walkAnswered, raw
	}
}

func (w *walk) failed(p peer.ID) {
	if wp := w.byID[p]; wp != nil {
		wp.state = walkFailed
	}
}

// answers are the answers of the k closest servers that answered, then
// those of the servers asked also that are not among them.
func (w *walk) answers() []walkAnswer {
	var out []walkAnswer
	for _, wp := range w.peers {
		if len(out) == w.k {
			break
		}
		if wp.state == walkAnswered {
			out = append(out, walkAnswer{wp.id, wp.raw})
		}
	}
	for _, wp := range w.also {
		if wp.state == walkAnswered && !slices.ContainsFunc(out, func(a walkAnswer) bool { return a.p == wp.id }) {
			out = append(out, walkAnswer{wp.id, wp.raw})
		}
	}
	return out
}

// walkValue is a Kademlia lookup of key whose requests are GET_VALUE. A
// server's answer to it names the servers it knows closer to the key, as
// FIND_NODE's does, and carries the value it holds under the key: when the
// walk has found the closest servers it has their values, a round trip
// sooner than a walk followed by a round of GET_VALUE to the servers it
// found. It ends as kad-dht's lookup with its follow-up does (see walk)
// and returns the answers of the k closest servers that answered and of
// also (asked first, whatever their distance). The requests are published
// as kad-dht's query events.
func walkValue(ctx context.Context, d *dht.IpfsDHT, key string, also ...peer.ID) ([]walkAnswer, error) {
	h := d.Host()
	w := newWalk(h.ID(), key, maxLookupPeers, walkBeta)
	w.hearAlso(also...)
	if w.hear(d.RoutingTable().NearestPeers(w.target, maxLookupPeers)...) == 0 && len(w.peers) == 0 {
		return nil, errors.New("no DHT server known")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type reply struct {
		p    peer.ID
		resp *pb.Message
		err  error
	}
	// At most walkAlpha requests are in flight, so their replies never
	// block, even after the walk has returned.
	replies := make(chan reply, walkAlpha)
	inflight := 0
	for !w.done() {
		for _, p := range w.next(walkAlpha - inflight) {
			inflight++
			routing.PublishQueryEvent(ctx, &routing.QueryEvent{Type: routing.SendingQuery, ID: p})
			go func() {
				rctx, cancel := context.WithTimeout(ctx, lookupPeerWait)
				defer cancel()
				resp, err := KadRequest(rctx, h, p, pb.NewMessage(pb.Message_GET_VALUE, []byte(key), 0))
				replies <- reply{p, resp, err}
			}()
		}
		if inflight == 0 {
			break // every server it could ask has answered or failed
		}
		var r reply
		select {
		case r = <-replies:
			inflight--
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if r.err != nil {
			w.failed(r.p)
			routing.PublishQueryEvent(ctx, &routing.QueryEvent{Type: routing.QueryError, ID: r.p, Extra: r.err.Error()})
			continue
		}
		raw, closer := readAnswer(r.resp, key)
		for _, ai := range closer {
			if h.Network().Connectedness(ai.ID) != network.Connected {
				h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
			}
			w.hear(ai.ID)
		}
		w.answered(r.p, raw)
		routing.PublishQueryEvent(ctx, &routing.QueryEvent{Type: routing.PeerResponse, ID: r.p, Responses: closer})
	}
	return w.answers(), nil
}

// readAnswer takes what a GET_VALUE answer holds for key: the value (nil
// when there is none, or it is filed under another key) and at most
// maxCloserPeers servers with at most maxPeerAddrs addresses each. Peers
// whose ID does not parse are dropped.
func readAnswer(resp *pb.Message, key string) ([]byte, []*peer.AddrInfo) {
	var raw []byte
	if rec := resp.GetRecord(); rec != nil && string(rec.GetKey()) == key && len(rec.GetValue()) > 0 {
		raw = rec.GetValue()
	}
	var closer []*peer.AddrInfo
	for _, pp := range resp.GetCloserPeers() {
		if len(closer) == maxCloserPeers {
			break
		}
		id := peer.ID(pp.GetId())
		if id.Validate() != nil {
			continue
		}
		ai := pb.PBPeerToPeerInfo(pp)
		if len(ai.Addrs) > maxPeerAddrs {
			ai.Addrs = ai.Addrs[:maxPeerAddrs]
		}
		closer = append(closer, &ai)
	}
	return raw, closer
}

// KadRequest sends one request of parley's DHT protocol to p and reads
// its answer (maxKadMessage bytes at most), within ctx. On a new
// connection it does not wait for identify, as a host's NewStream does:
// the protocol is proposed with the request itself (multistream's lazy
// select), so a server a walk has just heard of costs one round trip, not
// two. A peer that does not speak the protocol refuses it, and the request
// fails. The lookup's walk sends its requests with it, and so do the scale
// lab's load generators and its reference round trip.
func KadRequest(ctx context.Context, h host.Host, p peer.ID, req *pb.Message) (*pb.Message, error) {
	if err := h.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
		return nil, err
	}
	s, err := h.Network().NewStream(network.WithNoDial(ctx, "connected"), p)
	if err != nil {
		return nil, err
	}
	if err := s.SetProtocol(kadProtocol); err != nil {
		s.Reset()
		return nil, err
	}
	dl, _ := ctx.Deadline()
	if err := s.SetDeadline(dl); err != nil {
		s.Reset()
		return nil, err
	}
	rw := msmux.NewMSSelect(s, kadProtocol)
	if err := pbio.NewDelimitedWriter(rw).WriteMsg(req); err != nil {
		s.Reset()
		return nil, err
	}
	var resp pb.Message
	if err := pbio.NewDelimitedReader(rw, maxKadMessage).ReadMsg(&resp); err != nil {
		s.Reset()
		return nil, fmt.Errorf("DHT request to %s: %w", p.ShortString(), err)
	}
	_ = s.Close() // the answer is read; a close that fails loses nothing
	return &resp, nil
}
