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
// relay address, and wraps each socket in a relayConn. With a data plane
// (the UDP listener's allocations on Linux) the sockets are its raw ones.
type relayAllocator struct {
	s  *Server
	dp *dataPlane // nil: net.UDPConn sockets served by pion's goroutines
}

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
	listen := func(port int) (relaySocket, error) {
		ap := netip.AddrPortFrom(bind, uint16(port))
		if g.dp != nil {
			return g.dp.openRelay(ap)
		}
		c, err := net.ListenUDP(conf.Network, net.UDPAddrFromAddrPort(ap))
		return relaySocket{udp: c}, err
	}
	var sock relaySocket
	var err error
	if p := conf.RequestedPort; p != 0 { // EVEN-PORT / RESERVATION-TOKEN
		if p < lo || p > hi {
			return nil, nil, fmt.Errorf("allocate relay port %d outside %d-%d: %w", p, lo, hi, errNoRelayPort)
		}
		if sock, err = listen(p); err != nil {
			return nil, nil, fmt.Errorf("allocate relay port %d: %w", p, err)
		}
	} else {
		// Walk the range from a random start: a busy range still finds the
		// free ports, and ports stay hard to guess.
		start := rand.IntN(size)
		for i := 0; i < size; i++ {
			if sock, err = listen(lo + (start+i)%size); err == nil {
				break
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("allocate relay in %d-%d: %w (last: %v)", lo, hi, errNoRelayPort, err)
		}
	}
	port := sock.local().Port
	addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(relay, uint16(port)))
	rc, err := g.s.newRelayConn(sock, addr, g.dp)
	if err != nil {
		sock.close()
		return nil, nil, err
	}
	return rc, addr, nil
}

// relaySocket is a relayed socket: a net.UDPConn or a data plane's raw
// socket.
type relaySocket struct {
	udp   *net.UDPConn
	fd    int
	fam   int
	bound *net.UDPAddr // the raw socket's address
}

func (r relaySocket) local() *net.UDPAddr {
	if r.udp != nil {
		return r.udp.LocalAddr().(*net.UDPAddr)
	}
	return r.bound
}

func (r relaySocket) close() {
	if r.udp != nil {
		r.udp.Close()
	} else {
		closeFD(r.fd)
	}
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
// With a data plane (dp non-nil) the socket is a raw one the data plane
// reads: ReadFrom then returns only what the data plane hands to pion
// (datagrams from permitted peers without a channel, for Data
// indications), and the data plane makes the same checks on the channel
// traffic it relays itself.
//
// Dropping is silent, as it is for any UDP datagram.
type relayConn struct {
	udp      *net.UDPConn // nil with a data plane
	s        *Server
	key      string
	local    *net.UDPAddr
	toPeer   budget
	toClient budget
	// mu guards timer, perms, chans and client.
	mu            sync.RWMutex
	timer         *time.Timer
	perms         map[netip.Addr]struct{}
	closeOnce     sync.Once
	closeErr      error
	readErrStreak int

	// Data plane only.
	dp     *dataPlane
	id     int32        // epoll tag; guarded by dp.mu
	fam    int          // socket address family
	fdMu   sync.RWMutex // fd is written under dp.mu and fdMu; read under either
	fd     int
	slow   chan slowPkt
	closed chan struct{}
	chans  map[netip.AddrPort]uint16 // peer to channel number
	client rawAddr                   // the allocation's client, once a channel is bound
}

func (s *Server) newRelayConn(sock relaySocket, relay net.Addr, dp *dataPlane) (*relayConn, error) {
	r := &relayConn{
		udp:      sock.udp,
		s:        s,
		key:      relay.String(),
		local:    sock.local(),
		toPeer:   newBudget(s.s.bytesPerSec, s.s.packetsPerSec),
		toClient: newBudget(s.s.bytesPerSec, s.s.packetsPerSec),
		perms:    map[netip.Addr]struct{}{},
		fd:       -1,
	}
	if dp != nil {
		r.dp, r.fd, r.fam = dp, sock.fd, sock.fam
		r.slow = make(chan slowPkt, dpSlowQueue)
		r.closed = make(chan struct{})
		r.chans = map[netip.AddrPort]uint16{}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, errClosed
	}
	s.relays[r.key] = r
	s.mu.Unlock()
	if dp != nil {
		if err := dp.register(r); err != nil {
			s.mu.Lock()
			delete(s.relays, r.key)
			s.mu.Unlock()
			return nil, err
		}
	}
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
	if r.dp != nil {
		select { // the data plane checked permission and budget
		case pk := <-r.slow:
			n := copy(p, pk.b)
			r.s.stats.toClientPackets.Add(1)
			r.s.stats.toClientBytes.Add(uint64(n))
			return n, net.UDPAddrFromAddrPort(pk.from), nil
		case <-r.closed:
			return 0, nil, net.ErrClosed
		}
	}
	for {
		n, ap, err := r.udp.ReadFromUDPAddrPort(p)
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
	n, err := r.write(p, netip.AddrPortFrom(ip, ap.Port()))
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
		if r.dp != nil {
			r.closeErr = r.dp.unregister(r)
			close(r.closed)
		} else {
			r.closeErr = r.udp.Close()
		}
		r.s.mu.Lock()
		if r.s.relays[r.key] == r {
			delete(r.s.relays, r.key)
		}
		r.s.mu.Unlock()
	})
	return r.closeErr
}

func (r *relayConn) write(p []byte, to netip.AddrPort) (int, error) {
	if r.dp == nil {
		return r.udp.WriteToUDPAddrPort(p, to)
	}
	sa, err := rawFromAddr(to, r.fam)
	if err != nil {
		return 0, err
	}
	r.fdMu.RLock()
	defer r.fdMu.RUnlock()
	if r.fd < 0 {
		return 0, net.ErrClosed
	}
	if err := sendto(r.fd, p, &sa); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: r.local, Err: err}
	}
	return len(p), nil
}

// LocalAddr is the relayed socket's bound address.
func (r *relayConn) LocalAddr() net.Addr { return r.local }

// SetDeadline and its kin are not used by pion on relayed sockets.
func (r *relayConn) SetDeadline(time.Time) error      { return errors.ErrUnsupported }
func (r *relayConn) SetReadDeadline(time.Time) error  { return errors.ErrUnsupported }
func (r *relayConn) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }
