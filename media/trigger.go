package media

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/pionlog"
)

// Triggered checks.
//
// pion's ICE agent runs its checks on a 200 ms tick, and its controlling
// side (the caller's) has no triggered checks (RFC 8445 §7.3.1.4): when the
// callee's check arrives, which is the moment both NATs have opened, or when
// the caller's own check succeeds, nothing happens until the next tick. On
// half of the NATed calls that was 150-200 ms of every setup. pion offers no
// setting for the interval, but it runs a round of checks at once whenever a
// remote candidate is added; a checkTrigger uses that door. While the
// controlling side is connecting it watches the UDP sockets the agent reads
// (a transport.Net wrapper) for STUN binding requests and success
// responses, and after the agent has handled one it adds a remote candidate
// that can never pair (a passive TCP candidate in the documentation range,
// when no TCP network type is enabled, so no check and no connection is
// ever made to it): the agent then checks every pair at once, or nominates
// the pair that just succeeded. It does the same when the relay hold-back
// ends, so a relayed pair is taken at relayHoldBack and not at the next
// tick.
//
// Rounds are spaced by at least triggerSpacing and at most triggerMax happen
// per connection attempt, so the extra checks stay within the pacing RFC
// 8445 allows; maxBindingRequests is raised by as many, so the extra rounds
// never make a slow pair look failed sooner than pion's own ticks would.

const (
	triggerSpacing = 10 * time.Millisecond
	triggerMax     = 32
	// pion's own limit (7 unanswered checks) plus the triggered rounds.
	maxBindingRequests = 7 + triggerMax
)

// setAgentNet gives the agent cfg.Net (or the host's network) with its
// sockets watched for trig and its sockets to TURN servers recorded in
// relays, and the check limit the triggered rounds need. With a TCP
// network type enabled, trig is left disarmed for good: its candidate
// would then be paired and dialled.
func setAgentNet(se *webrtc.SettingEngine, cfg Config, trig *checkTrigger, relays *relaySockets) error {
	base := cfg.Net
	if base == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return fmt.Errorf("media: network: %w", err)
		}
		base = n
	}
	se.SetNet(agentNet{Net: base, t: trig, relays: relays})
	for _, nt := range cfg.NetworkTypes {
		if nt == webrtc.NetworkTypeTCP4 || nt == webrtc.NetworkTypeTCP6 {
			trig.off = true
			return nil
		}
	}
	se.SetICEMaxBindingRequests(maxBindingRequests)
	return nil
}

// checkTrigger runs pion's check rounds on events, for one session.
type checkTrigger struct {
	clk  clock.Clock
	poke func(seq int) // makes the agent run a round; seq is unique per session
	off  bool          // never arm (set before use)

	mu    sync.Mutex
	armed bool // connecting as the controlling side
	// pending: a STUN message arrived; trigger once it is handled. Atomic
	// so that the read of every datagram costs a load, not a lock.
	pending atomic.Bool
	timer   bool      // a spaced trigger is scheduled
	last    time.Time // the last trigger
	count   int       // triggers since armed
	seq     int       // triggers over the session
}

// newCheckTrigger is a trigger, off until armed and given its poke.
func newCheckTrigger(clk clock.Clock) *checkTrigger {
	return &checkTrigger{clk: clk}
}

// pokeAgent makes pc's agent run a round of checks: it adds a remote
// candidate that is unique (so the agent does not drop it as a duplicate)
// and passive TCP (so it is never paired: no TCP is gathered).
func pokeAgent(pc *webrtc.PeerConnection, seq int, log *slog.Logger) {
	c := fmt.Sprintf("candidate:trigger%d 1 tcp 1 2001:db8::1 %d typ host tcptype passive", seq, 1024+seq)
	if err := pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c}); err != nil {
		// Best effort: pion's own tick still runs the checks.
		log.Debug("triggered ICE checks", "err", err)
		return
	}
	log.Log(context.Background(), pionlog.LevelTrace, "triggered ICE checks", "round", seq)
}

// arm starts triggering for a connection attempt (the first one or an ICE
// restart) of the controlling side, and schedules a round for when the
// relay hold-back ends.
func (t *checkTrigger) arm() {
	if t == nil || t.off {
		return
	}
	t.mu.Lock()
	t.armed, t.count = true, 0
	t.pending.Store(false)
	t.mu.Unlock()
	t.clk.AfterFunc(relayHoldBack+2*time.Millisecond, t.fire)
}

// disarm stops triggering: a pair is selected.
func (t *checkTrigger) disarm() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.armed = false
	t.pending.Store(false)
	t.mu.Unlock()
}

// noteSTUN records that a binding request or success response arrived.
func (t *checkTrigger) noteSTUN() {
	t.mu.Lock()
	if t.armed {
		t.pending.Store(true)
	}
	t.mu.Unlock()
}

// handled is called when the agent has handled the last datagram a socket
// read (it is reading the next): a pending trigger fires now, or once the
// spacing allows.
func (t *checkTrigger) handled() {
	if !t.pending.Load() {
		return
	}
	t.mu.Lock()
	if !t.pending.Load() || !t.armed {
		t.mu.Unlock()
		return
	}
	t.pending.Store(false)
	wait := triggerSpacing - t.clk.Now().Sub(t.last)
	if wait > 0 {
		if !t.timer {
			t.timer = true
			t.clk.AfterFunc(wait, func() {
				t.mu.Lock()
				t.timer = false
				t.mu.Unlock()
				t.fire()
			})
		}
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.fire()
}

// fire makes the agent run a round of checks now, if still armed.
func (t *checkTrigger) fire() {
	t.mu.Lock()
	if !t.armed || t.count >= triggerMax || t.poke == nil {
		t.mu.Unlock()
		return
	}
	t.count++
	t.seq++
	t.last = t.clk.Now()
	seq, poke := t.seq, t.poke
	t.mu.Unlock()
	poke(seq)
}

// isBindingCheck reports whether b is a STUN binding request or success
// response (RFC 5389 §6: type, length, magic cookie), without decoding it.
func isBindingCheck(b []byte) bool {
	if len(b) < 20 || binary.BigEndian.Uint32(b[4:8]) != 0x2112A442 {
		return false
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	return typ == 0x0001 || typ == 0x0101
}

// agentNet is the agent's network with its UDP sockets watched for t,
// and its sockets to TURN servers recorded in relays (relayrelease.go).
type agentNet struct {
	transport.Net
	t      *checkTrigger
	relays *relaySockets
}

// ListenUDP is where the agent opens its host and server-reflexive sockets.
func (n agentNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	fast, _ := c.(*net.UDPConn)
	return &triggerConn{UDPConn: c, fast: fast, t: n.t}, nil
}

// triggerConn is a watched socket. It keeps the allocation-free reads of a
// *net.UDPConn, which pion uses when the socket offers them.
type triggerConn struct {
	transport.UDPConn
	fast *net.UDPConn // nil when the socket is not a kernel one
	t    *checkTrigger
}

func (c *triggerConn) seen(b []byte, n int, err error) {
	if err == nil && isBindingCheck(b[:n]) {
		c.t.noteSTUN()
	}
}

// ReadFrom reads the next datagram; the agent has handled the previous one.
func (c *triggerConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.t.handled()
	n, a, err := c.UDPConn.ReadFrom(b)
	c.seen(b, n, err)
	return n, a, err
}

// ReadFromAddrPort is ReadFrom without an allocation per datagram.
func (c *triggerConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	c.t.handled()
	var (
		n   int
		ap  netip.AddrPort
		err error
	)
	if c.fast != nil {
		n, ap, err = c.fast.ReadFromUDPAddrPort(b)
	} else {
		var a net.Addr
		n, a, err = c.UDPConn.ReadFrom(b)
		if ua, ok := a.(*net.UDPAddr); ok {
			ap = ua.AddrPort()
		}
	}
	c.seen(b, n, err)
	return n, ap, err
}

// WriteToAddrPort writes a datagram to addr.
func (c *triggerConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.fast != nil {
		return c.fast.WriteToUDPAddrPort(b, addr)
	}
	return c.UDPConn.WriteTo(b, net.UDPAddrFromAddrPort(addr))
}
