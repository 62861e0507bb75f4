package turnrelay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/turn/v5"
	"golang.org/x/time/rate"
)

var (
	errNoRelayFamily = errors.New("no relay address of the requested family")
	errTCPRelay      = errors.New("TCP relaying (RFC 6062) is not offered")
	errNoRelayPort   = errors.New("no free relay port")
)

// relayAllocator is the turn.RelayAddressGenerator: it binds relayed ports
// in the configured range on the bind address, reports them on the public
// relay address, and wraps each socket in a relayConn.
type relayAllocator struct{ s *Server }

func (g *relayAllocator) Validate() error { return nil }

func (g *relayAllocator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	st := g.s.s
	relay, bind := st.relay4, st.bind4
	if conf.Network == "udp6" {
		relay, bind = st.relay6, st.bind6
	}
	if !relay.IsValid() {
		return nil, nil, fmt.Errorf("allocate %s relay: %w", conf.Network, errNoRelayFamily)
	}
	lo, hi := int(st.MinPort), int(st.MaxPort)
	size := hi - lo + 1
	listen := func(port int) (*net.UDPConn, error) {
		return net.ListenUDP(conf.Network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, uint16(port))))
	}
	var conn *net.UDPConn
	var err error
	if p := conf.RequestedPort; p != 0 { // EVEN-PORT / RESERVATION-TOKEN
		if p < lo || p > hi {
			return nil, nil, fmt.Errorf("allocate relay port %d outside %d-%d: %w", p, lo, hi, errNoRelayPort)
		}
		if conn, err = listen(p); err != nil {
			return nil, nil, fmt.Errorf("allocate relay port %d: %w", p, err)
		}
	} else {
		// Walk the range from a random start: a busy range still finds the
		// free ports, and ports stay hard to guess.
		start := rand.IntN(size)
		for i := 0; i < size && conn == nil; i++ {
			conn, err = listen(lo + (start+i)%size)
		}
		if conn == nil {
			return nil, nil, fmt.Errorf("allocate relay in %d-%d: %w (last: %v)", lo, hi, errNoRelayPort, err)
		}
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(relay, uint16(port)))
	rc, err := g.s.newRelayConn(conn, addr)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return rc, addr, nil
}

func (g *relayAllocator) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTCPRelay
}

func (g *relayAllocator) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTCPRelay
}

// budget caps one direction of one allocation; nil limiters are no cap.
type budget struct{ bytes, packets *rate.Limiter }

func newBudget(bytesPerSec, packetsPerSec int) budget {
	var b budget
	if bytesPerSec > 0 {
		b.bytes = rate.NewLimiter(rate.Limit(bytesPerSec), bytesPerSec) // one second of burst
	}
	if packetsPerSec > 0 {
		b.packets = rate.NewLimiter(rate.Limit(packetsPerSec), packetsPerSec)
	}
	return b
}

func (b budget) allow(now time.Time, n int) bool {
	if b.packets != nil && !b.packets.AllowN(now, 1) {
		return false
	}
	return b.bytes == nil || b.bytes.AllowN(now, n)
}

// relayConn is an allocation's relayed socket. pion reads peer datagrams
// and writes client data through it, so it is where the relay counts,
// rate-limits and re-checks what it relays:
//   - WriteTo (client to peer) drops datagrams to a refused address or to
//     any port of our own addresses but another allocation's (see toSelf),
//     whatever pion's permission state says;
//   - ReadFrom (peer to client) drops datagrams from addresses with no
//     permission before they cost the allocation any budget, so a stranger
//     spraying the relayed port cannot starve the real peer.
//
// Dropping is silent, as it is for any UDP datagram.
type relayConn struct {
	*net.UDPConn
	s             *Server
	key           string
	toPeer        budget
	toClient      budget
	mu            sync.RWMutex
	timer         *time.Timer // guarded by mu
	perms         map[netip.Addr]struct{}
	closeOnce     sync.Once
	closeErr      error
	readErrStreak int
}

func (s *Server) newRelayConn(c *net.UDPConn, relay net.Addr) (*relayConn, error) {
	r := &relayConn{
		UDPConn:  c,
		s:        s,
		key:      relay.String(),
		toPeer:   newBudget(s.s.bytesPerSec, s.s.packetsPerSec),
		toClient: newBudget(s.s.bytesPerSec, s.s.packetsPerSec),
		perms:    map[netip.Addr]struct{}{},
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, errClosed
	}
	s.relays[r.key] = r
	s.mu.Unlock()
	if d := s.s.maxDuration; d > 0 {
		// Closing the socket ends pion's read loop, which deletes the
		// allocation: the one way to end it from outside.
		r.mu.Lock()
		r.timer = time.AfterFunc(d, func() {
			s.log.Info("TURN allocation reached its maximum duration", "relay", r.key, "after", d)
			r.Close()
		})
		r.mu.Unlock()
	}
	return r, nil
}

func (r *relayConn) setPermission(peer net.IP, on bool) {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		return
	}
	ip = ip.Unmap()
	r.mu.Lock()
	if on {
		r.perms[ip] = struct{}{}
	} else {
		delete(r.perms, ip)
	}
	r.mu.Unlock()
}

func (r *relayConn) permitted(ip netip.Addr) bool {
	r.mu.RLock()
	_, ok := r.perms[ip]
	r.mu.RUnlock()
	return ok
}

// ReadFrom returns the next datagram from a permitted peer within budget.
func (r *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, ap, err := r.UDPConn.ReadFromUDPAddrPort(p)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.readErrStreak > 100 {
				return 0, nil, err
			}
			// pion ends the allocation on any read error; a stray ICMP
			// report must not do that.
			r.readErrStreak++
			continue
		}
		r.readErrStreak = 0
		ip := ap.Addr().Unmap()
		if !r.permitted(ip) {
			continue // pion would drop it too, after counting nothing
		}
		if !r.toClient.allow(r.s.s.Now(), n) {
			r.s.stats.dropped[dropRate].Add(1)
			continue
		}
		r.s.stats.toClientPackets.Add(1)
		r.s.stats.toClientBytes.Add(uint64(n))
		return n, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, ap.Port())), nil
	}
}

// WriteTo sends client data to a peer, unless policy or budget refuse it.
func (r *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ap := listenerAddr(addr)
	ip := ap.Addr().Unmap()
	if r.s.s.policy.Check(ip) != nil || r.s.toSelf(netip.AddrPortFrom(ip, ap.Port())) {
		r.s.stats.dropped[dropPolicy].Add(1)
		return len(p), nil
	}
	if !r.toPeer.allow(r.s.s.Now(), len(p)) {
		r.s.stats.dropped[dropRate].Add(1)
		return len(p), nil
	}
	n, err := r.UDPConn.WriteToUDPAddrPort(p, netip.AddrPortFrom(ip, ap.Port()))
	if err == nil {
		r.s.stats.toPeerPackets.Add(1)
		r.s.stats.toPeerBytes.Add(uint64(n))
	}
	return n, err
}

// Close closes the socket and forgets it; safe to call more than once.
func (r *relayConn) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		if r.timer != nil {
			r.timer.Stop()
		}
		r.mu.Unlock()
		r.closeErr = r.UDPConn.Close()
		r.s.mu.Lock()
		if r.s.relays[r.key] == r {
			delete(r.s.relays, r.key)
		}
		r.s.mu.Unlock()
	})
	return r.closeErr
}
