package supernode

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// DefaultSTUNPort is the STUN server's default UDP port (RFC 8489 §18.4).
const DefaultSTUNPort = 3478

// STUN server limits: a datagram larger than maxSTUNPacket is not STUN we
// answer, and one source address gets stunRate answers a second (burst
// stunBurst), so the server cannot be used to amplify traffic at a victim.
const (
	maxSTUNPacket = 1500
	stunRate      = 20
	stunBurst     = 40
	maxSTUNPeers  = 10000
)

// errNotBinding is returned for a datagram that is not a Binding request.
var errNotBinding = errors.New("not a STUN binding request")

// STUNServer answers STUN Binding requests with the address it saw them
// from: what a node behind a NAT needs for server-reflexive candidates.
type STUNServer struct {
	conn net.PacketConn
	log  *slog.Logger
	wg   sync.WaitGroup

	mu      sync.Mutex
	limiter map[string]*rate.Limiter

	// Counts of datagrams by what became of them (STUNServer.Collectors).
	answered, limited, invalid atomic.Uint64
}

// Collectors are the server's metrics: parley_stun_requests_total by
// result (answered, rate_limited, invalid).
func (s *STUNServer) Collectors() []prometheus.Collector {
	c := func(result string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_stun_requests_total",
			Help: "STUN datagrams the supernode received, by result (answered, rate_limited, invalid).", ConstLabels: prometheus.Labels{"result": result}},
			func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{c("answered", &s.answered), c("rate_limited", &s.limited), c("invalid", &s.invalid)}
}

// ListenSTUN serves STUN on the UDP address addr ("0.0.0.0:3478").
func ListenSTUN(addr string, log *slog.Logger) (*STUNServer, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("STUN listener %s: %w", addr, err)
	}
	s := &STUNServer{conn: conn, log: log, limiter: map[string]*rate.Limiter{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the UDP address the server listens on.
func (s *STUNServer) Addr() *net.UDPAddr { return s.conn.LocalAddr().(*net.UDPAddr) }

// Close stops the server.
func (s *STUNServer) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

func (s *STUNServer) serve() {
	defer s.wg.Done()
	buf := make([]byte, maxSTUNPacket+1)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("stun read", "err", err)
			continue
		}
		udp, ok := from.(*net.UDPAddr)
		if !ok || n > maxSTUNPacket {
			s.invalid.Add(1)
			continue
		}
		if !s.allow(udp.IP) {
			s.limited.Add(1)
			continue
		}
		resp, err := stunResponse(buf[:n], udp)
		if err != nil {
			s.invalid.Add(1)
			continue
		}
		s.answered.Add(1)
		// A lost answer is a lost UDP datagram: the client retransmits
		// (RFC 8489 §6.2.1), so there is nothing to do with the error.
		_, _ = s.conn.WriteTo(resp, from)
	}
}

func (s *STUNServer) allow(ip net.IP) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ip.String()
	l, ok := s.limiter[k]
	if !ok {
		if len(s.limiter) >= maxSTUNPeers {
			s.limiter = map[string]*rate.Limiter{} // forget everyone rather than grow without bound
		}
		l = rate.NewLimiter(stunRate, stunBurst)
		s.limiter[k] = l
	}
	return l.AllowN(time.Now(), 1)
}

// stunResponse builds the Binding success response to req, a datagram from
// addr, or fails for anything that is not a well-formed Binding request.
func stunResponse(req []byte, from *net.UDPAddr) ([]byte, error) {
	if len(req) > maxSTUNPacket || !stun.IsMessage(req) {
		return nil, errNotBinding
	}
	m := &stun.Message{Raw: append([]byte(nil), req...)}
	if err := m.Decode(); err != nil {
		return nil, fmt.Errorf("decode STUN: %w", err)
	}
	if m.Type != stun.BindingRequest {
		return nil, errNotBinding
	}
	resp, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.IP, Port: from.Port}, stun.NewSoftware("parley"), stun.Fingerprint)
	if err != nil {
		return nil, err
	}
	return resp.Raw, nil
}
