package turnrelay

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Stream (TCP and TLS) connection limits. pion serves each accepted
// connection in its own goroutine for as long as it stays open and stops
// accepting for good on the first Accept error, so the listener below
// bounds both.
const (
	// firstReadTimeout: a new connection must send (or finish its TLS
	// handshake) within this.
	firstReadTimeout = 10 * time.Second
	// idleSlack is added to the allocation lifetime to make the idle
	// timeout of a connection that spoke: a client with an allocation
	// refreshes within its lifetime, and ICE consent checks (RFC 7675) flow
	// every few seconds.
	idleSlack = 30 * time.Second
	// acceptBackoff is the pause after a failed Accept (e.g. EMFILE).
	acceptBackoff = 50 * time.Millisecond
)

// packetListener is the UDP listener handed to pion. A read error other
// than closing is logged and skipped: pion's read loop would otherwise end
// and the relay would go deaf.
type packetListener struct {
	net.PacketConn
	log  *slog.Logger
	done chan struct{}
	once sync.Once
}

func newPacketListener(pc net.PacketConn, log *slog.Logger) *packetListener {
	return &packetListener{PacketConn: pc, log: log, done: make(chan struct{})}
}

func (p *packetListener) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := p.PacketConn.ReadFrom(b)
		if err == nil {
			return n, a, nil
		}
		if errors.Is(err, net.ErrClosed) {
			p.once.Do(func() { close(p.done) })
			return n, a, err
		}
		p.log.Debug("TURN UDP read", "err", err)
		time.Sleep(time.Millisecond)
	}
}

// doneChan is closed once pion's read loop has seen the listener closed
// (nil receiver: already closed).
func (p *packetListener) doneChan() <-chan struct{} {
	if p == nil {
		return closedChan
	}
	return p.done
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// connLimiter is a TCP listener that admits at most the server's
// allocation caps in connections (one allocation per connection), in total
// and per client IP, puts read deadlines on them, and can close them all.
type connLimiter struct {
	net.Listener
	s    *Server
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
	perIP map[netip.Addr]int
}

func newConnLimiter(l net.Listener, s *Server) *connLimiter {
	return &connLimiter{Listener: l, s: s, done: make(chan struct{}),
		conns: map[*limitedConn]struct{}{}, perIP: map[netip.Addr]int{}}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.once.Do(func() { close(l.done) })
				return nil, err
			}
			l.s.log.Warn("TURN accept", "err", err)
			time.Sleep(acceptBackoff)
			continue
		}
		ip := addrIP(c.RemoteAddr())
		if lc := l.admit(c, ip); lc != nil {
			return lc, nil
		}
		l.s.stats.refused[reasonQuota].Add(1)
		l.s.log.Debug("TURN connection refused: too many", "client", c.RemoteAddr())
		c.Close()
	}
}

func (l *connLimiter) admit(c net.Conn, ip netip.Addr) *limitedConn {
	st := l.s.s
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.maxAllocs > 0 && len(l.conns) >= st.maxAllocs || st.maxPerIP > 0 && l.perIP[ip] >= st.maxPerIP {
		return nil
	}
	lc := &limitedConn{Conn: c, l: l, ip: ip, idle: st.AllocationLifetime + idleSlack}
	l.conns[lc] = struct{}{}
	l.perIP[ip]++
	return lc
}

func (l *connLimiter) closeConns() {
	l.mu.Lock()
	cs := make([]*limitedConn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

func (l *connLimiter) doneChan() <-chan struct{} {
	if l == nil {
		return closedChan
	}
	return l.done
}

// limitedConn is an admitted connection with read deadlines.
type limitedConn struct {
	net.Conn
	l      *connLimiter
	ip     netip.Addr
	idle   time.Duration
	spoke  bool // only pion's one reader touches it
	closed sync.Once
}

func (c *limitedConn) Read(b []byte) (int, error) {
	d := firstReadTimeout
	if c.spoke {
		d = c.idle
	}
	c.Conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.spoke = true
	}
	return n, err
}

func (c *limitedConn) Close() error {
	err := net.ErrClosed
	c.closed.Do(func() {
		err = c.Conn.Close()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		dec(c.l.perIP, c.ip)
		c.l.mu.Unlock()
	})
	return err
}
