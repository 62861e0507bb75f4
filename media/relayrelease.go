package media

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/pion/transport/v4"

	"github.com/parley-net/parley/internal/clock"
)

// Releasing relays once a call is direct.
//
// Every session gathers TURN relay candidates, so that a call can start at
// once when no direct pair works. Once ICE has selected a direct pair they
// are worse than useless: each holds an allocation on a relay a stranger
// volunteers (a supernode) or the operator pays for (the cloud relay), is
// checked through it every few hundred milliseconds for the whole call,
// and pion's renomination, which judges "better" by candidate type and the
// last RTT it measured, moves a direct call to a relayed pair whenever the
// direct path's RTT jitters (seen in the NAT lab under load). A session
// therefore closes its sockets to the TURN servers relayRelease after a
// direct pair was selected (both ends do: a pair with the peer's relay
// candidate dies with the peer's allocation). Failover does not need them:
// when the direct path dies, the call restarts ICE, which gathers new
// relay candidates. A session that is relayed keeps them, and one whose
// pair moves back to a relay before relayRelease cancels the release.

// relayRelease is how long a direct pair must have been selected before
// the relay candidates are released: time for DTLS and the first audio to
// prove the pair, and short enough that a pair selected in the first half
// second is released before pion first considers renominating
// (renominationInterval after checks began).
const relayRelease = 1500 * time.Millisecond

// relaySockets are the sockets a session's agent opened to TURN servers.
type relaySockets struct {
	clk clock.Clock
	// silence is how long a TURN server may leave a request unanswered
	// before the socket to it fails its writes (silentRelayConn); 0 never.
	silence time.Duration

	mu      sync.Mutex
	conns   []io.Closer
	opened  int         // sockets ever added
	pending clock.Timer // the scheduled release, nil when none
}

// add records a socket to a TURN server.
func (r *relaySockets) add(c io.Closer) {
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.opened++
	r.mu.Unlock()
}

// pathSelected schedules the release when the selected pair is direct and
// cancels it when it is relayed. release is called when it happens, with
// the number of sockets closed.
func (r *relaySockets) pathSelected(relayed bool, released func(n int)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if relayed {
		if r.pending != nil {
			r.pending.Stop()
			r.pending = nil
		}
		return
	}
	if r.pending != nil {
		return
	}
	var t clock.Timer
	t = r.clk.AfterFunc(relayRelease, func() {
		r.mu.Lock()
		if r.pending != t {
			r.mu.Unlock()
			return
		}
		r.pending = nil
		conns := r.conns
		r.conns = nil
		r.mu.Unlock()
		for _, c := range conns {
			_ = c.Close() // the agent's read on it ends; nothing else is lost
		}
		if released != nil {
			released(len(conns))
		}
	})
	r.pending = t
}

// stop cancels a scheduled release (the session is closing).
func (r *relaySockets) stop() {
	r.mu.Lock()
	if r.pending != nil {
		r.pending.Stop()
		r.pending = nil
	}
	r.mu.Unlock()
}

// ListenPacket is where the agent opens its sockets to TURN servers over
// UDP (and nothing else).
func (n agentNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil && n.relays != nil {
		if n.relays.silence > 0 {
			c = &silentRelayConn{PacketConn: c, clk: n.relays.clk, timeout: n.relays.silence}
		}
		n.relays.add(c)
	}
	return c, err
}

// DialTCP is where the agent connects to TURN servers over TCP and TLS.
func (n agentNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (transport.TCPConn, error) {
	c, err := n.Net.DialTCP(network, laddr, raddr)
	if err == nil && n.relays != nil {
		n.relays.add(c)
	}
	return c, err
}

// DialUDP is where the agent connects to TURN servers over DTLS.
func (n agentNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.DialUDP(network, laddr, raddr)
	if err == nil && n.relays != nil {
		n.relays.add(c)
	}
	return c, err
}
