package turnrelay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"github.com/parley-net/parley/internal/turnrest"
)

// Timers pion applies to every allocation (RFC 8656 §9 and §12).
const (
	permissionLifetime  = 5 * time.Minute
	channelBindLifetime = 10 * time.Minute
	// pendingAllocTTL is how long a quota slot is held for an Allocate that
	// passed the quota check but has not (yet) produced an allocation.
	pendingAllocTTL = 5 * time.Second
	// udpSocketBuffer is the UDP listener's socket buffer size.
	udpSocketBuffer = 4 << 20
	// closeWait bounds how long Close waits for pion's goroutines.
	closeWait = 5 * time.Second
)

// Server is a running TURN relay. Its methods are safe for concurrent use.
type Server struct {
	s     *settings
	log   *slog.Logger
	turn  *turn.Server
	stats counters

	udp       *packetListener // nil without UDP
	dp        *dataPlane      // the UDP listener's data plane; nil without one
	tcp, tlsL *connLimiter    // nil without TCP / TLS
	tlsOuter  net.Listener
	self      map[netip.AddrPort]bool // our listeners: never a peer
	ownIPs    map[netip.Addr]bool     // this host's addresses: no port of them is a peer, but our allocations
	unreg     func()

	mu      sync.Mutex
	closing bool
	live    map[string]*allocation // by 5-tuple
	pending map[string]pendingAlloc
	users   map[string]int
	ips     map[netip.Addr]int
	relays  map[string]*relayConn // by relayed transport address

	closeOnce sync.Once
	closeErr  error
}

type allocation struct {
	user  string
	ip    netip.Addr
	relay string
}

type pendingAlloc struct {
	user    string
	ip      netip.Addr
	expires time.Time
}

// New starts a TURN relay with cfg.
func New(cfg Config) (_ *Server, err error) {
	st, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := &Server{
		s: st, log: st.Logger,
		self:    map[netip.AddrPort]bool{},
		ownIPs:  ownAddrs(st),
		live:    map[string]*allocation{},
		pending: map[string]pendingAlloc{},
		users:   map[string]int{},
		ips:     map[netip.Addr]int{},
		relays:  map[string]*relayConn{},
	}
	defer func() {
		if err != nil {
			s.closeListeners()
		}
	}()
	tc := turn.ServerConfig{
		Realm:              st.Realm,
		AuthHandler:        s.authenticate,
		QuotaHandler:       s.quota,
		EventHandler:       s.events(),
		AllocationLifetime: st.AllocationLifetime,
		PermissionTimeout:  permissionLifetime,
		ChannelBindTimeout: channelBindLifetime,
		LoggerFactory:      newPionLogs(s.log, st.Now),
	}
	if err := s.listen(&tc); err != nil {
		return nil, err
	}
	if st.Registerer != nil {
		if s.unreg, err = s.registerMetrics(st.Registerer); err != nil {
			return nil, err
		}
	}
	if s.turn, err = turn.NewServer(tc); err != nil {
		if s.unreg != nil {
			s.unreg()
		}
		return nil, fmt.Errorf("start TURN server: %w", err)
	}
	if st.relay4.IsValid() && st.policy.Check(st.relay4) != nil || st.relay6.IsValid() && st.policy.Check(st.relay6) != nil {
		s.log.Warn("a relay IP is in a range peers are refused from; clients of other relays will not reach it",
			"relay4", st.relay4, "relay6", st.relay6)
	}
	s.logStarted()
	return s, nil
}

// listen opens the listeners the settings ask for (UDP, TCP, TLS) and
// adds them to tc.
func (s *Server) listen(tc *turn.ServerConfig) (err error) {
	st := s.s
	var tlsConf *tls.Config
	if st.TLSAddr != "" {
		if tlsConf = st.TLSConfig; tlsConf == nil {
			cert, err := tls.LoadX509KeyPair(st.TLSCertFile, st.TLSKeyFile)
			if err != nil {
				return fmt.Errorf("turn relay TLS certificate: %w", err)
			}
			tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	}
	gen := &relayAllocator{s: s}
	if st.UDPAddr != "" {
		pc, udpGen, err := s.listenUDP(st.UDPAddr)
		if err != nil {
			return err
		}
		s.udp = newPacketListener(pc, s.log)
		s.addSelf(pc.LocalAddr())
		tc.PacketConnConfigs = append(tc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn: s.udp, RelayAddressGenerator: udpGen, PermissionHandler: s.permit,
		})
	}
	if st.TCPAddr != "" {
		if s.tcp, err = s.listenTCP(st.TCPAddr); err != nil {
			return err
		}
		tc.ListenerConfigs = append(tc.ListenerConfigs, turn.ListenerConfig{
			Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	if st.TLSAddr != "" {
		if s.tlsL, err = s.listenTCP(st.TLSAddr); err != nil {
			return err
		}
		s.tlsOuter = tls.NewListener(s.tlsL, tlsConf)
		tc.ListenerConfigs = append(tc.ListenerConfigs, turn.ListenerConfig{
			Listener: s.tlsOuter, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	return nil
}

// logStarted logs the listeners and relayed addresses of a started server.
func (s *Server) logStarted() {
	st := s.s
	attrs := []any{"ports", fmt.Sprintf("%d-%d", st.MinPort, st.MaxPort), "realm", st.Realm}
	for _, l := range []struct {
		name string
		addr net.Addr
	}{{"udp", s.UDPAddr()}, {"tcp", s.TCPAddr()}, {"tls", s.TLSAddr()}} {
		if ap := listenerAddr(l.addr); ap.IsValid() {
			attrs = append(attrs, l.name, ap)
		}
	}
	for _, r := range []netip.Addr{st.relay4, st.relay6} {
		if r.IsValid() {
			attrs = append(attrs, "relay", r)
		}
	}
	s.log.Info("TURN relay started", attrs...)
}

// listenUDP opens the UDP listener and the generator of its allocations'
// relayed sockets: the data plane's raw sockets where there is one (Linux),
// else net.UDPConns served by pion's goroutines.
func (s *Server) listenUDP(addr string) (net.PacketConn, *relayAllocator, error) {
	if haveDataPlane {
		dp, err := newDataPlane(s, addr)
		if err != nil {
			return nil, nil, err
		}
		s.dp = dp
		return dp.lis, &relayAllocator{s: s, dp: dp}, nil
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("turn relay UDP listener %s: %w", addr, err)
	}
	if u, ok := pc.(*net.UDPConn); ok {
		// Every client's datagrams queue on this one socket for pion's
		// one read loop; the default buffer holds only ~10 ms of a few
		// hundred calls. The kernel caps it at net.core.rmem_max.
		if err := u.SetReadBuffer(udpSocketBuffer); err != nil {
			s.log.Debug("TURN UDP receive buffer", "err", err)
		}
		if err := u.SetWriteBuffer(udpSocketBuffer); err != nil {
			s.log.Debug("TURN UDP send buffer", "err", err)
		}
	}
	return pc, &relayAllocator{s: s}, nil
}

func (s *Server) listenTCP(addr string) (*connLimiter, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("turn relay TCP listener %s: %w", addr, err)
	}
	s.addSelf(l.Addr())
	return newConnLimiter(l, s), nil
}

// addSelf records a listener so no allocation can send to it (a relay
// looping into its own listeners).
func (s *Server) addSelf(a net.Addr) {
	ap := listenerAddr(a)
	if ip := ap.Addr().Unmap(); ip.IsValid() && !ip.IsUnspecified() {
		s.ownIPs[ip] = true
	}
	for _, ip := range []netip.Addr{ap.Addr().Unmap(), s.s.relay4, s.s.relay6, s.s.bind4, s.s.bind6,
		netip.IPv6Loopback(), netip.AddrFrom4([4]byte{127, 0, 0, 1})} {
		if ip.IsValid() {
			s.self[netip.AddrPortFrom(ip, ap.Port())] = true
		}
	}
}

// UDPAddr is the UDP listener's address, or nil.
func (s *Server) UDPAddr() *net.UDPAddr {
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr().(*net.UDPAddr)
}

// TCPAddr is the TCP listener's address, or nil.
func (s *Server) TCPAddr() *net.TCPAddr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr().(*net.TCPAddr)
}

// TLSAddr is the TLS listener's address, or nil.
func (s *Server) TLSAddr() *net.TCPAddr {
	if s.tlsL == nil {
		return nil
	}
	return s.tlsL.Addr().(*net.TCPAddr)
}

// Realm is the STUN realm clients authenticate in.
func (s *Server) Realm() string { return s.s.Realm }

// CredentialConfig is a CredentialConfig describing this server: its
// secret, its listener ports and its clock. A supernode adds the limits and
// serves it with ServeCredentials on its own host.
func (s *Server) CredentialConfig() CredentialConfig {
	c := CredentialConfig{Secret: s.s.Secret, Now: s.s.Now}
	if a := s.UDPAddr(); a != nil {
		c.UDPPort = a.Port
	}
	if a := s.TCPAddr(); a != nil {
		c.TCPPort = a.Port
	}
	if a := s.TLSAddr(); a != nil {
		c.TLSPort = a.Port
	}
	return c
}

// MaxCredentialTTL is the longest credential lifetime the server accepts.
func (s *Server) MaxCredentialTTL() time.Duration { return s.s.MaxCredentialTTL }

// Close stops the server: listeners, client connections and allocations.
// It returns once pion's goroutines have let go of them (or after a few
// seconds if they do not).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.closeErr = s.turn.Close()
		s.closeListeners()
		s.mu.Lock()
		relays := make([]*relayConn, 0, len(s.relays))
		for _, r := range s.relays {
			relays = append(relays, r)
		}
		s.mu.Unlock()
		for _, r := range relays {
			r.Close()
		}
		deadline := time.Now().Add(closeWait)
		for _, done := range []<-chan struct{}{s.udp.doneChan(), s.tcp.doneChan(), s.tlsL.doneChan()} {
			select {
			case <-done:
			case <-time.After(time.Until(deadline)):
			}
		}
		for time.Now().Before(deadline) {
			s.mu.Lock()
			n := len(s.live) + len(s.relays)
			s.mu.Unlock()
			if n == 0 && s.turn.AllocationCount() == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if s.unreg != nil {
			s.unreg()
		}
	})
	return s.closeErr
}

func (s *Server) closeListeners() {
	if s.udp != nil {
		s.udp.Close()
	}
	for _, l := range []*connLimiter{s.tcp, s.tlsL} {
		if l != nil {
			l.Close()
			l.closeConns()
		}
	}
}

// authenticate is pion's AuthHandler: the username must be a TURN REST
// username valid now under our secret and realm. It returns the <id> as the
// user (quotas count per id) and the long-term key pion checks
// MESSAGE-INTEGRITY with.
func (s *Server) authenticate(ra *turn.RequestAttributes) (string, []byte, bool) {
	if ra.Realm != s.s.Realm {
		s.refuse(reasonAuth, "wrong realm", "client", ra.SrcAddr, "realm", ra.Realm)
		return "", nil, false
	}
	id, pass, err := turnrest.Check(s.s.Secret, ra.Username, s.s.Now(), s.s.MaxCredentialTTL)
	if err != nil {
		s.refuse(reasonAuth, "bad credential", "client", ra.SrcAddr, "method", ra.Method, "err", err)
		return "", nil, false
	}
	return id, turnrest.LongTermKey(ra.Username, ra.Realm, pass), true
}

// permit is pion's PermissionHandler for CreatePermission, ChannelBind and
// Connect: the peer address policy.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	if err := s.s.policy.CheckIP(peer); err != nil {
		s.refuse(reasonPolicy, "peer refused", "client", client, "err", err)
		return false
	}
	return true
}

func (s *Server) refuse(r reason, msg string, args ...any) {
	s.stats.refused[r].Add(1)
	s.log.Debug("TURN "+msg, args...)
}

// quota is pion's QuotaHandler, called before each new allocation. It
// reserves a slot for the allocation pion is about to make; the slot becomes
// an allocation in onCreated or lapses after pendingAllocTTL.
func (s *Server) quota(user, _ string, src net.Addr) bool {
	ip := addrIP(src)
	now := s.s.Now()
	key := src.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	delete(s.pending, key) // a retry after a failed attempt
	users, ips := s.users[user], s.ips[ip]
	for k, p := range s.pending {
		if now.After(p.expires) {
			delete(s.pending, k)
			continue
		}
		if p.user == user {
			users++
		}
		if p.ip == ip {
			ips++
		}
	}
	total := len(s.live) + len(s.pending)
	var why string
	switch {
	case s.s.maxAllocs > 0 && total >= s.s.maxAllocs:
		why = "server full"
	case s.s.maxPerUser > 0 && users >= s.s.maxPerUser:
		why = "user quota"
	case s.s.maxPerIP > 0 && ips >= s.s.maxPerIP:
		why = "IP quota"
	}
	if why != "" {
		s.stats.refused[reasonQuota].Add(1)
		s.log.Debug("TURN allocation refused: "+why, "client", src, "user", user)
		return false
	}
	s.pending[key] = pendingAlloc{user: user, ip: ip, expires: now.Add(pendingAllocTTL)}
	return true
}

func (s *Server) events() turn.EventHandler {
	return turn.EventHandler{
		OnAuth: func(src, _ net.Addr, _, username, _, method string, ok bool) {
			if !ok { // the username was ours but MESSAGE-INTEGRITY did not match
				s.refuse(reasonAuth, "bad message integrity", "client", src, "user", username, "method", method)
			}
		},
		OnAllocationCreated: func(src, dst net.Addr, _, user, _ string, relay net.Addr, _ int) {
			s.mu.Lock()
			delete(s.pending, src.String())
			a := &allocation{user: user, ip: addrIP(src), relay: relay.String()}
			s.live[tupleKey(src, dst)] = a
			s.users[a.user]++
			s.ips[a.ip]++
			s.mu.Unlock()
			s.stats.allocations.Add(1)
			s.log.Debug("TURN allocation", "client", src, "user", user, "relay", relay)
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, user, _ string) {
			s.mu.Lock()
			k := tupleKey(src, dst)
			a := s.live[k]
			if a != nil {
				delete(s.live, k)
				dec(s.users, a.user)
				dec(s.ips, a.ip)
			}
			s.mu.Unlock()
			if a != nil {
				s.stats.allocations.Add(-1)
				s.log.Debug("TURN allocation ended", "client", src, "user", user)
			}
		},
		OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			if r := s.relayFor(relay); r != nil {
				r.setPermission(peer, true)
			}
		},
		OnPermissionDeleted: func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			if r := s.relayFor(relay); r != nil {
				r.setPermission(peer, false)
			}
		},
		// pion calls these with its allocation's channel lock held: they
		// must not call back into pion.
		OnChannelCreated: func(src, _ net.Addr, _, _, _ string, relay, peer net.Addr, num uint16) {
			if r := s.relayFor(relay); r != nil && r.dp != nil {
				r.dp.bindChannel(r, unmapPort(listenerAddr(src)), unmapPort(listenerAddr(peer)), num)
			}
		},
		OnChannelDeleted: func(src, _ net.Addr, _, _, _ string, relay, peer net.Addr, num uint16) {
			if r := s.relayFor(relay); r != nil && r.dp != nil {
				r.dp.unbindChannel(r, unmapPort(listenerAddr(src)), unmapPort(listenerAddr(peer)), num)
			}
		},
	}
}

// ownAddrs are the addresses a relay refuses every port of: every
// interface address of the host (read once at start), its relay and bind
// IPs, and both loopback addresses.
func ownAddrs(st *settings) map[netip.Addr]bool {
	own := map[netip.Addr]bool{netip.IPv6Loopback(): true, netip.AddrFrom4([4]byte{127, 0, 0, 1}): true}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					own[ip.Unmap()] = true
				}
			}
		}
	}
	for _, ip := range []netip.Addr{st.relay4, st.relay6, st.bind4, st.bind6} {
		if ip.IsValid() && !ip.IsUnspecified() {
			own[ip.Unmap()] = true
		}
	}
	return own
}

// toSelf reports whether a datagram to ap would stay on this host outside
// the relay: a listener of ours, or any port of our own addresses that is
// not another allocation's relayed port.
func (s *Server) toSelf(ap netip.AddrPort) bool {
	if s.self[ap] {
		return true
	}
	if !s.ownIPs[ap.Addr()] || s.s.AllowOwnAddrs {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.relays {
		if la, ok := r.LocalAddr().(*net.UDPAddr); ok && la.Port == int(ap.Port()) {
			return false // two clients of this relay reaching each other
		}
	}
	return true
}

func (s *Server) relayFor(a net.Addr) *relayConn {
	if a == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relays[a.String()]
}

func dec[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

func tupleKey(src, dst net.Addr) string { return src.String() + "|" + dst.String() }

func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// addrIP is the unmapped IP of a UDP or TCP address (zero if neither).
func addrIP(a net.Addr) netip.Addr {
	return listenerAddr(a).Addr().Unmap()
}

var errClosed = errors.New("turn relay closed")
