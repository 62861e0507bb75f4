package media

import (
	"net"
	"strconv"
	"time"

	"github.com/pion/webrtc/v4"
)

// renominationInterval is how often at most the controlling side moves a
// call to a better pair. Checks run with ICE's keepalives, so a move comes
// within about this plus Config.KeepaliveInterval of the better pair
// succeeding. pion judges "better" by candidate types and by the last RTT
// measured (10 ms less is better): a jittery direct path can lose to a
// relay for a while, so moves are not made more often than this.
const renominationInterval = 2 * time.Second

// relayHoldBack is how long after checks begin a relayed pair may be
// selected: time for a direct pair to succeed first, and for the
// controlled side's first checks to open its NAT to every candidate of
// the peer (see newAPI).
const relayHoldBack = 100 * time.Millisecond

// OnPathChange registers f to receive the media path each time ICE selects
// a pair: the first one, a move to a better pair found later and the pair
// after an ICE restart. f runs on the session's event goroutine, in order
// with the OnState callbacks; a path selected before f was registered is
// delivered at once.
func (s *Session) OnPathChange(f func(Path)) {
	s.mu.Lock()
	s.onPath = f
	last := s.lastPath
	s.mu.Unlock()
	if last != nil {
		p := *last
		s.enqueue(event{path: &p})
	}
}

// handlePair runs on pion's goroutine when ICE selects a pair.
func (s *Session) handlePair(pair *webrtc.ICECandidatePair) {
	if pair == nil || pair.Local == nil || pair.Remote == nil {
		return
	}
	s.trig.disarm()
	p := Path{
		LocalType:  pair.Local.Typ.String(),
		RemoteType: pair.Remote.Typ.String(),
		Local:      net.JoinHostPort(pair.Local.Address, strconv.Itoa(int(pair.Local.Port))),
		Remote:     net.JoinHostPort(pair.Remote.Address, strconv.Itoa(int(pair.Remote.Port))),
		Protocol:   pair.Local.Protocol.String(),
	}
	s.mu.Lock()
	if p.LocalType == "relay" {
		p.RelayServer = relayServerFor(pair.Local.Address, "", s.cfg.ICEServers)
	}
	s.lastPath = &p
	s.mu.Unlock()
	s.relays.pathSelected(p.LocalType == "relay" || p.RemoteType == "relay", func(n int) {
		s.log.Debug("relay candidates released: the call is direct", "sockets", n)
	})
	s.log.Info("media path", "local", p.LocalType+" "+p.Local, "remote", p.RemoteType+" "+p.Remote)
	s.enqueue(event{path: &p})
}
