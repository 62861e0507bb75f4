package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/media"
)

// SessionConfig is the ICE configuration a page's peer connection gets:
// what the daemon would use for its own (supernode STUN/TURN, cloud TURN
// credentials).
type SessionConfig struct {
	// ICEServers are handed to the page as RTCIceServer. nil means host
	// candidates only.
	ICEServers []webrtc.ICEServer
	// RelayOnly sets iceTransportPolicy "relay".
	RelayOnly bool
	// StallTimeout is how long the page may receive no packet, while it
	// says it is connected, before the session reads as disconnected: the
	// trigger of a pion session (media.Config.DisconnectedTimeout, ICE
	// silence), so a call restarts ICE as soon with a browser leg. Audio
	// flows every 20 ms (every 400 ms in DTX); Chromium's own
	// "disconnected" takes 5 s or more. 0 leaves the page's states alone.
	StallTimeout time.Duration
	// Clock tells the time of the page's reports; nil is the wall clock.
	Clock clock.Clock
}

type report struct {
	at      time.Time
	in, out uint64 // bytes
}

// Session is one RTCPeerConnection in a page, with the methods of
// media.Session a call needs. Callbacks (OnLocalCandidate, OnState) run one
// at a time, in order, on a goroutine of the session's own.
type Session struct {
	p     *Page
	id    string
	cfg   SessionConfig
	first chan struct{}
	done  chan struct{}

	firstOnce, doneOnce sync.Once

	// mu guards the fields below.
	mu          sync.Mutex
	onCandidate func(string)
	onState     func(media.State)
	onPath      func(media.Path)
	// path is the pair the page's last report named (nil before one).
	path *media.Path
	// state is what the session says: pageState, but disconnected while
	// the page receives nothing for cfg.StallTimeout.
	state     media.State
	pageState media.State
	// lastIn is the page's last count of received packets, inAt when it
	// last grew (or the page last became connected).
	lastIn uint64
	inAt   time.Time
	stats  PageStats
	// recent holds the reports of about the last second and one before
	// it, oldest first: bitrates are taken over at least a second.
	recent []report
	queue  []func()
	signal chan struct{}
}

func newSession(p *Page, id string, cfg SessionConfig) *Session {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	s := &Session{p: p, id: id, cfg: cfg, first: make(chan struct{}), done: make(chan struct{}), signal: make(chan struct{}, 1)}
	go s.deliver()
	return s
}

// ID is the session's name in the page.
func (s *Session) ID() string { return s.id }

// CreateOffer asks the page for its offer.
func (s *Session) CreateOffer(ctx context.Context) (string, error) {
	return s.sdp(ctx, Message{T: "offer", ID: s.id})
}

// RestartICE asks the page for an ICE-restart offer.
func (s *Session) RestartICE(ctx context.Context) (string, error) {
	return s.sdp(ctx, Message{T: "offer", ID: s.id, Restart: true})
}

// Answer hands the page an offer (the first or a restart) and returns its answer.
func (s *Session) Answer(ctx context.Context, offer string) (string, error) {
	if len(offer) > maxSDP {
		return "", fmt.Errorf("browser: offer of %d bytes", len(offer))
	}
	return s.sdp(ctx, Message{T: "answer", ID: s.id, SDP: offer})
}

func (s *Session) sdp(ctx context.Context, m Message) (string, error) {
	if s.isDone() {
		return "", media.ErrClosed
	}
	r, err := s.p.request(ctx, m)
	if err != nil {
		return "", err
	}
	if r.SDP == "" {
		return "", fmt.Errorf("browser: %s: the page returned no SDP", m.T)
	}
	return r.SDP, nil
}

// SetAnswer hands the page the peer's answer. It does not wait: an error
// comes back from the page and fails the session.
func (s *Session) SetAnswer(sdp string) error {
	if len(sdp) > maxSDP {
		return fmt.Errorf("browser: answer of %d bytes", len(sdp))
	}
	return s.send(Message{T: "remote", ID: s.id, SDP: sdp})
}

// AddRemoteCandidate hands the page a peer's candidate (RTCIceCandidateInit
// JSON; "" is the end of candidates).
func (s *Session) AddRemoteCandidate(cand string) error {
	if cand == "" {
		return nil
	}
	var init webrtc.ICECandidateInit
	if len(cand) > maxCandidate {
		return fmt.Errorf("%w: %d bytes", media.ErrBadCandidate, len(cand))
	}
	if err := json.Unmarshal([]byte(cand), &init); err != nil {
		return fmt.Errorf("%w: %v", media.ErrBadCandidate, err)
	}
	if init.Candidate == "" {
		return nil
	}
	return s.send(Message{T: "cand", ID: s.id, Cand: &cand})
}

// SetICEServers hands the page the ICE servers for the next restart.
func (s *Session) SetICEServers(servers []webrtc.ICEServer) error {
	if len(servers) > maxICEServers {
		return fmt.Errorf("browser: %d ICE servers", len(servers))
	}
	s.mu.Lock()
	s.cfg.ICEServers = servers
	s.mu.Unlock()
	return s.send(Message{T: "ice", ID: s.id, ICE: servers})
}

func (s *Session) send(m Message) error {
	if s.isDone() {
		return media.ErrClosed
	}
	if !s.p.Send(m) {
		return ErrPageGone
	}
	return nil
}

// OnLocalCandidate registers f for the page's candidates.
func (s *Session) OnLocalCandidate(f func(string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onCandidate = f
}

// OnState registers f for the peer connection's state changes.
func (s *Session) OnState(f func(media.State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onState = f
}

// OnPathChange registers f for the pairs the page's ICE selects: the
// first, a move to another pair, the pair after an ICE restart (as a pion
// session's). A pair the page named before is delivered at once.
func (s *Session) OnPathChange(f func(media.Path)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onPath = f
	if s.path != nil {
		s.enqueuePathLocked(*s.path)
	}
}

func (s *Session) enqueuePathLocked(p media.Path) {
	notifyLocked(s, func() func(media.Path) { return s.onPath }, p)
}

// notifyLocked calls the callback that get returns (read under s.mu when
// it runs; none if nil) with v, on the session's callback goroutine. s.mu
// is held.
func notifyLocked[T any](s *Session, get func() func(T), v T) {
	s.enqueueLocked(func() {
		s.mu.Lock()
		f := get()
		s.mu.Unlock()
		if f != nil {
			f(v)
		}
	})
}

// FirstAudio is closed when the page has received audio.
func (s *Session) FirstAudio() <-chan struct{} { return s.first }

// Done is closed when the session has ended (Close, the page closed it, or
// the page went away).
func (s *Session) Done() <-chan struct{} { return s.done }

func (s *Session) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// PacketsReceived is the page's count of received RTP packets.
func (s *Session) PacketsReceived() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.PacketsIn
}

// Stats converts the page's last report.
func (s *Session) Stats() media.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var prev PageStats
	var over time.Duration
	if n := len(s.recent); n > 1 {
		first, last := s.recent[0], s.recent[n-1]
		prev.BytesIn, prev.BytesOut, over = first.in, first.out, last.at.Sub(first.at)
	}
	return statsFrom(s.state, s.stats, prev, over)
}

// Close closes the page's peer connection.
func (s *Session) Close() error {
	if !s.isDone() {
		s.p.Send(Message{T: "close", ID: s.id})
	}
	s.ended()
	return nil
}

// ended marks the session closed, tells OnState and forgets it.
func (s *Session) ended() {
	s.doneOnce.Do(func() {
		s.mu.Lock()
		s.state = media.StateClosed
		s.mu.Unlock()
		s.p.forget(s)
		s.mu.Lock()
		notifyLocked(s, func() func(media.State) { return s.onState }, media.StateClosed)
		s.mu.Unlock()
		close(s.done)
	})
}

// fromPage applies one message of the page about this session.
func (s *Session) fromPage(m *Message) {
	switch m.T {
	case "cand":
		s.mu.Lock()
		notifyLocked(s, func() func(string) { return s.onCandidate }, *m.Cand)
		s.mu.Unlock()
	case "state":
		st := stateOf(m.State)
		if st == media.StateClosed {
			s.ended()
			return
		}
		s.mu.Lock()
		if st == media.StateConnected && s.pageState != media.StateConnected {
			s.inAt = s.cfg.Clock.Now() // a new path: its packets have yet to come
		}
		s.pageState = st
		s.updateStateLocked(s.cfg.Clock.Now())
		s.mu.Unlock()
	case "stats":
		now := s.cfg.Clock.Now()
		s.mu.Lock()
		if m.Stats.PacketsIn != s.lastIn {
			s.lastIn, s.inAt = m.Stats.PacketsIn, now
		}
		s.updateStateLocked(now)
		if p := pathOf(*m.Stats); p.LocalType != "" && (s.path == nil || *s.path != p) {
			s.path = &p
			if s.onPath != nil {
				s.enqueuePathLocked(p)
			}
		}
		s.stats = *m.Stats
		s.recent = append(s.recent, report{at: now, in: m.Stats.BytesIn, out: m.Stats.BytesOut})
		for len(s.recent) > 1 && !s.recent[1].at.After(now.Add(-time.Second)) {
			s.recent = s.recent[1:]
		}
		s.mu.Unlock()
		if m.Stats.PacketsIn > 0 && m.Stats.ReceivedS > 0 {
			s.firstOnce.Do(func() { close(s.first) })
		}
	case "error":
		s.p.log.Info("browser peer connection", "id", s.id, "err", m.Error)
	case "closed":
		s.ended()
	}
}

// updateStateLocked sets the session's state from the page's and the
// packets it receives, and tells OnState of a change. s.mu is held.
func (s *Session) updateStateLocked(now time.Time) {
	st := s.pageState
	if st == media.StateConnected && s.cfg.StallTimeout > 0 && s.lastIn > 0 && now.Sub(s.inAt) >= s.cfg.StallTimeout {
		st = media.StateDisconnected
	}
	if st == s.state || s.state == media.StateClosed {
		return
	}
	s.state = st
	notifyLocked(s, func() func(media.State) { return s.onState }, st)
}

// enqueueLocked runs f on the session's callback goroutine, in order.
// s.mu is held.
func (s *Session) enqueueLocked(f func()) {
	if len(s.queue) < maxQueued {
		s.queue = append(s.queue, f)
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// deliver runs the callbacks until the session is done and they are out.
func (s *Session) deliver() {
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, f := range q {
			f()
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-s.signal:
		case <-s.done:
			s.mu.Lock()
			left := len(s.queue)
			s.mu.Unlock()
			if left == 0 {
				return
			}
		}
	}
}

func stateOf(s string) media.State {
	switch s {
	case "connecting":
		return media.StateConnecting
	case "connected":
		return media.StateConnected
	case "disconnected":
		return media.StateDisconnected
	case "failed":
		return media.StateFailed
	case "closed":
		return media.StateClosed
	}
	return media.StateNew
}

// opusDelay is the one-way delay Opus adds (a 20 ms frame and the
// encoder's look-ahead), as media counts it for MOS.
const opusDelay = 26500 * time.Microsecond

// pathOf is the pair a page's report names.
func pathOf(cur PageStats) media.Path {
	p := media.Path{LocalType: cur.LocalType, RemoteType: cur.RemoteType, Local: cur.Local, Remote: cur.Remote,
		Protocol: cur.Protocol}
	if cur.LocalType == "relay" {
		p.RelayServer, p.RelayProtocol = cur.RelayURL, cur.RelayProtocol
	}
	return p
}

func statsFrom(state media.State, cur, prev PageStats, over time.Duration) media.Stats {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	st := media.Stats{State: state, RTT: sec(cur.RTTS), Jitter: sec(cur.JitterS),
		Concealed: sec(cur.ConcealedS), JitterBuffer: sec(cur.JitterBufferS),
		PacketsSent: cur.PacketsOut, BytesSent: cur.BytesOut, PacketsReceived: cur.PacketsIn, BytesReceived: cur.BytesIn,
		Path: pathOf(cur)}
	if cur.RTTS > 0 {
		st.RTTSource = "ice"
	}
	if expected := int64(cur.PacketsIn) + cur.Lost; expected > 0 && cur.Lost > 0 {
		st.LossPercent = 100 * float64(cur.Lost) / float64(expected)
	}
	if over > 0 {
		s := over.Seconds()
		st.ReceiveBitrate = 8 * float64(cur.BytesIn-min(prev.BytesIn, cur.BytesIn)) / s
		st.SendBitrate = 8 * float64(cur.BytesOut-min(prev.BytesOut, cur.BytesOut)) / s
	}
	var effLoss float64
	if cur.ReceivedS > 0 {
		effLoss = 100 * cur.ConcealedS / cur.ReceivedS
	}
	st.R = media.EModelR(st.RTT/2+st.JitterBuffer+opusDelay, effLoss)
	st.MOS = media.MOSFromR(st.R)
	return st
}
