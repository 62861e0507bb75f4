package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/parley-net/parley/internal/clock"
)

// A relay that stopped answering.
//
// pion's TURN client creates a permission for a peer synchronously, inside
// the ICE agent's loop, when a check goes to a peer it has none for, and a
// relay that refuses the peer (403: a browser offers its LAN address, and a
// relay that never relays to private addresses refuses it) leaves none, so
// every check asks again. While the relay answers that costs a round trip.
// Once it has died, each request waits out its retransmissions (about 8 s)
// with the agent's loop blocked: the call neither sees its path die nor
// takes the ICE restart that would move it (a relay-only caller facing a
// browser took 16.7 s to move, against 2.1 s between two pion nodes).
//
// So a socket to a TURN server fails its writes once the server has left a
// request unanswered for the session's DisconnectedTimeout, the silence
// after which ICE calls a path dead anyway: the blocked request ends at its
// next retransmission, and the next ones at once. Only requests start the
// clock (a relay owes no answer to data sent through it), and anything the
// server sends stops it. The ICE restart that follows gathers a new
// allocation on a new socket.

// errRelaySilent is a write to a TURN server that stopped answering.
var errRelaySilent = errors.New("media: the TURN server has stopped answering")

// silentRelayConn is an agent's socket to a TURN server (see above).
type silentRelayConn struct {
	net.PacketConn
	clk     clock.Clock
	timeout time.Duration

	// since is when the first request was sent after the server last sent
	// anything, in Unix nanoseconds; 0 when every request since has been
	// answered. Atomic: every relayed datagram passes here.
	since atomic.Int64
}

func (c *silentRelayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	now := c.clk.Now().UnixNano()
	since := c.since.Load()
	if since != 0 && time.Duration(now-since) >= c.timeout {
		return 0, fmt.Errorf("%w for %v", errRelaySilent, c.timeout)
	}
	if since == 0 && isSTUNRequest(p) {
		c.since.CompareAndSwap(0, now)
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *silentRelayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if n > 0 {
		c.since.Store(0)
	}
	return n, addr, err
}

// isSTUNRequest reports whether b is a STUN message of the request class
// (RFC 8489 §5: two zero bits, the class bits 0 and 0, the magic cookie).
func isSTUNRequest(b []byte) bool {
	if len(b) < 20 || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:8]) != 0x2112A442 {
		return false
	}
	return binary.BigEndian.Uint16(b[0:2])&0x0110 == 0
}
