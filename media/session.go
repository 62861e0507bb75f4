package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/thesyncim/gopus/container/ogg"

	"github.com/parley-net/parley/internal/clock"
)

// State is a Session's connection state, following the peer connection's
// (W3C RTCPeerConnectionState).
type State int

// Session states.
const (
	StateNew State = iota
	StateConnecting
	StateConnected
	StateDisconnected // traffic stopped; ICE may recover, or the caller may RestartICE
	StateFailed       // ICE gave up; RestartICE or Close
	StateClosed       // terminal: Close was called or the peer hung up
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateFailed:
		return "failed"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

func stateFromPeerConnection(s webrtc.PeerConnectionState) State {
	switch s {
	case webrtc.PeerConnectionStateConnecting:
		return StateConnecting
	case webrtc.PeerConnectionStateConnected:
		return StateConnected
	case webrtc.PeerConnectionStateDisconnected:
		return StateDisconnected
	case webrtc.PeerConnectionStateFailed:
		return StateFailed
	case webrtc.PeerConnectionStateClosed:
		return StateClosed
	}
	return StateNew
}

// opusPayloadType is the dynamic payload type we offer for Opus, the one
// browsers use.
const opusPayloadType = 111

// maxQueuedEvents bounds callbacks waiting for delivery.
const maxQueuedEvents = 1024

// Session is one WebRTC call leg carrying Opus audio both ways. Signalling
// (offer, answer, candidates) is carried by the caller. All methods are safe
// for concurrent use.
//
// Callbacks (OnLocalCandidate, OnState) run one at a time, in order, on a
// goroutine of the session's own; they may call any Session method,
// including Close.
type Session struct {
	cfg    Config
	log    *slog.Logger
	pc     *webrtc.PeerConnection
	trig   *checkTrigger // triggered check rounds while connecting (trigger.go)
	relays *relaySockets // sockets to TURN servers, released once direct (relayrelease.go)
	track  *audioTrack
	rtps   *webrtc.RTPSender
	enc    *encoder
	rx     *receiver
	ogg    *ogg.Writer // nil without a Recorder

	// sigMu serializes the calls that change the peer connection's
	// configuration or local description (SetICEServers, offers): pion's
	// SetConfiguration is not safe beside itself, and a call that restarts
	// ICE again before the last restart finished would run two at once.
	sigMu sync.Mutex

	mu           sync.Mutex
	closed       bool
	state        State
	onCandidate  func(string)
	onState      func(State)
	onPath       func(Path)
	lastPath     *Path // the pair ICE selected last, nil before the first
	remoteSet    bool
	pending      []webrtc.ICECandidateInit
	sendStarted  bool // sendOn is set
	playStarted  bool // playOn is set
	loopStarted  bool // mediaLoop is running
	readingTrack bool // a goroutine is reading the peer's audio track

	// Read by mediaLoop: sending starts once the call connects, playout
	// once the peer's track arrives.
	sendOn, playOn atomic.Bool
	loopWake       chan struct{}

	// Event delivery.
	evMu     sync.Mutex
	evQueue  []event
	evFinal  bool
	evSignal chan struct{}

	quit       chan struct{}
	done       chan struct{}
	firstAudio chan struct{}
	firstOnce  sync.Once
	closeOnce  sync.Once
	closeErr   error
	wg         sync.WaitGroup

	sent     sendCounters
	sendRate sendRate
	rtt      rtcpRTT
	red      *redPolicy // how much redundancy to send, from the peer's reports
}

type event struct {
	state     State
	candidate *string // set for a candidate event
	path      *Path   // set for a path event
}

type sendCounters struct {
	packets, bytes atomic.Uint64
	skipped        atomic.Uint64 // frames dropped because the sender fell behind
	redundant      atomic.Uint64 // earlier frames repeated in RED packets
	ssrc           atomic.Uint32
}

// NewSession creates a session and its peer connection. Nothing is sent
// until the call connects.
func NewSession(cfg Config) (*Session, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	s := &Session{
		cfg:        cfg,
		log:        cfg.Logger.With("subsystem", "media", "session", fmt.Sprintf("%08x", rand.Uint32())),
		evSignal:   make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
		firstAudio: make(chan struct{}),
		loopWake:   make(chan struct{}, 1),
		red:        newREDPolicy(1),
	}
	s.enc, err = newEncoder(cfg.Bitrate, cfg.FEC, cfg.DTX, cfg.ExpectedLoss)
	if err != nil {
		return nil, err
	}
	dec, err := newDecoder()
	if err != nil {
		return nil, err
	}
	s.rx = newReceiver(jitterConfig{
		minDelay:   durationSamples(cfg.JitterMin),
		maxDelay:   durationSamples(cfg.JitterMax),
		startDelay: durationSamples(cfg.JitterStart),
		fec:        true,
	}, dec)

	s.trig = newCheckTrigger(clock.Real{})
	s.relays = &relaySockets{clk: clock.Real{}, silence: cfg.DisconnectedTimeout}
	api, err := newAPI(cfg, s.log, s.trig, s.relays)
	if err != nil {
		return nil, err
	}
	pcConf := webrtc.Configuration{
		ICEServers:    cfg.ICEServers,
		BundlePolicy:  webrtc.BundlePolicyMaxBundle,
		RTCPMuxPolicy: webrtc.RTCPMuxPolicyRequire,
	}
	if cfg.RelayOnly {
		pcConf.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	s.pc, err = api.NewPeerConnection(pcConf)
	if err != nil {
		// It fails on configuration: ICE server URLs and credentials.
		return nil, fmt.Errorf("%w: new peer connection: %w", ErrInvalidConfig, err)
	}
	s.track = newAudioTrack(opusCapability(cfg))
	s.rtps, err = s.pc.AddTrack(s.track)
	if err == nil && cfg.Recorder != nil {
		s.ogg, err = ogg.NewWriter(cfg.Recorder, SampleRate, 1)
	}
	if err != nil {
		_ = s.pc.Close()
		return nil, fmt.Errorf("media: set up audio track: %w", err)
	}

	pc, log := s.pc, s.log
	s.trig.mu.Lock()
	s.trig.poke = func(seq int) { pokeAgent(pc, seq, log) }
	s.trig.mu.Unlock()
	s.pc.OnICECandidate(s.handleCandidate)
	s.pc.OnConnectionStateChange(s.handleState)
	s.pc.OnTrack(s.handleTrack)
	s.pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(s.handlePair)

	go s.deliverEvents()
	s.wg.Add(1)
	go s.readSenderRTCP()
	return s, nil
}

func opusCapability(cfg Config) webrtc.RTPCodecCapability {
	// We always decode in-band FEC, so we always ask for it (RFC 7587 §7).
	fmtp := "minptime=10;useinbandfec=1"
	if cfg.DTX {
		fmtp += ";usedtx=1"
	}
	return webrtc.RTPCodecCapability{
		MimeType:    webrtc.MimeTypeOpus,
		ClockRate:   SampleRate,
		Channels:    2, // RFC 7587 §7: always 2 in SDP, mono content is fine
		SDPFmtpLine: fmtp,
	}
}

// newAPI builds the pion API: Opus, then RED for Opus (unless cfg.NoRED),
// RTCP sender and receiver reports, and the ICE policy from cfg.
func newAPI(cfg Config, log *slog.Logger, trig *checkTrigger, relays *relaySockets) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: opusCapability(cfg),
		PayloadType:        opusPayloadType,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("media: register Opus: %w", err)
	}
	if !cfg.NoRED {
		// After Opus, as browsers list it: a peer that prefers the first
		// codec it knows still sends plain Opus unless it wants RED.
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: redCapability(opusPayloadType),
			PayloadType:        redPayloadType,
		}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, fmt.Errorf("media: register RED: %w", err)
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, fmt.Errorf("media: RTCP reports: %w", err)
	}

	se := webrtc.SettingEngine{LoggerFactory: pionLogs{log: log}}
	se.SetNetworkTypes(cfg.NetworkTypes)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	if cfg.IPFilter != nil {
		se.SetIPFilter(cfg.IPFilter)
	}
	if cfg.ResolveMDNS {
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeQueryOnly)
	} else {
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}
	if cfg.PortMin != 0 {
		if err := se.SetEphemeralUDPPortRange(cfg.PortMin, cfg.PortMax); err != nil {
			return nil, fmt.Errorf("%w: port range: %w", ErrInvalidConfig, err)
		}
	}
	se.SetICETimeouts(cfg.DisconnectedTimeout, cfg.FailedTimeout, cfg.KeepaliveInterval)
	// pion's ICE holds a working pair back (relay 2 s, peer-reflexive 1 s)
	// in case a more direct one succeeds, which was most of a NATed call's
	// setup. parley takes the first direct pair that works at once, and a
	// relayed one after relayHoldBack: while nothing is selected the
	// controlled side checks every pair, and its first checks are what
	// open its own NAT to the peer; once a pair is selected only the
	// controlling side keeps checking. The controlling side then moves
	// the call to a better pair when one succeeds later (renomination:
	// relay to direct, or a clearly better RTT), on the same DTLS session,
	// so the move is not heard.
	se.SetRelayAcceptanceMinWait(relayHoldBack)
	se.SetPrflxAcceptanceMinWait(0)
	se.SetSrflxAcceptanceMinWait(0)
	se.SetHostAcceptanceMinWait(0)
	if err := se.SetICERenomination(webrtc.WithRenominationInterval(renominationInterval)); err != nil {
		return nil, fmt.Errorf("media: ICE renomination: %w", err)
	}
	if err := setAgentNet(&se, cfg, trig, relays); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(
		webrtc.WithMediaEngine(m),
		webrtc.WithInterceptorRegistry(ir),
		webrtc.WithSettingEngine(se),
	), nil
}

// OnLocalCandidate registers f to receive local ICE candidates to trickle
// to the peer, each as the JSON of an RTCIceCandidateInit (what
// AddRemoteCandidate takes). "" signals that gathering is complete.
// Register it before CreateOffer or Answer, which start gathering.
func (s *Session) OnLocalCandidate(f func(candidateJSON string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onCandidate = f
}

// OnState registers f to be told of every state change.
func (s *Session) OnState(f func(State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onState = f
}

// State returns the current state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// FirstAudio returns a channel closed when the first received frame has
// been decoded.
func (s *Session) FirstAudio() <-chan struct{} { return s.firstAudio }

// Done returns a channel closed when the session has ended (Close was
// called, or the peer closed the connection) and every goroutine it started
// has stopped.
func (s *Session) Done() <-chan struct{} { return s.done }

// PacketsReceived counts the RTP packets of the peer's audio received so
// far: cheap enough to poll for whether the peer is still heard.
func (s *Session) PacketsReceived() uint64 {
	s.rx.mu.Lock()
	defer s.rx.mu.Unlock()
	return s.rx.packets
}

func (s *Session) checkOpen(ctx context.Context) error {
	if ctx != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// CreateOffer starts the call as the offerer and returns the SDP offer to
// send to the peer. Candidates trickle out through OnLocalCandidate.
func (s *Session) CreateOffer(ctx context.Context) (string, error) {
	return s.offer(ctx, false)
}

// SetICEServers replaces the STUN and TURN servers used from the next ICE
// restart (or answer) on: a relay that died is left out, a new one taken in.
func (s *Session) SetICEServers(servers []webrtc.ICEServer) error {
	if err := s.checkOpen(context.Background()); err != nil {
		return err
	}
	if len(servers) > maxICEServers {
		return fmt.Errorf("%w: %d ICE servers (at most %d)", ErrInvalidConfig, len(servers), maxICEServers)
	}
	if s.cfg.RelayOnly && !hasTURN(servers) {
		return fmt.Errorf("%w: relay-only session without a TURN server", ErrInvalidConfig)
	}
	s.sigMu.Lock()
	defer s.sigMu.Unlock()
	c := s.pc.GetConfiguration()
	c.ICEServers = servers
	if err := s.pc.SetConfiguration(c); err != nil {
		return fmt.Errorf("media: set ICE servers: %w", err)
	}
	s.mu.Lock()
	s.cfg.ICEServers = servers // for naming the relay a candidate came from
	s.mu.Unlock()
	return nil
}

// RestartICE creates an offer with fresh ICE credentials (RFC 8445 §9), for
// when the path died (relay outage, NAT rebinding, network change). Send it
// like the first offer; the peer answers with Answer and we take the answer
// with SetAnswer. Only the side that made the original offer restarts.
func (s *Session) RestartICE(ctx context.Context) (string, error) {
	return s.offer(ctx, true)
}

func (s *Session) offer(ctx context.Context, restart bool) (string, error) {
	if err := s.checkOpen(ctx); err != nil {
		return "", err
	}
	s.sigMu.Lock()
	defer s.sigMu.Unlock()
	what := "create offer"
	var opts *webrtc.OfferOptions
	if restart {
		what = "restart ICE"
		opts = &webrtc.OfferOptions{ICERestart: true}
		if pending := s.pc.PendingLocalDescription(); pending != nil && s.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
			// An earlier restart was never answered (its offer or the
			// answer was lost). pion cannot roll a local offer back, so
			// offer it again: its gathering is under way already.
			s.log.Debug("offer re-sent", "ice_restart", restart)
			return pending.SDP, nil
		}
	}
	offer, err := s.pc.CreateOffer(opts)
	if err != nil {
		return "", fmt.Errorf("media: %s: %w", what, err)
	}
	if err := s.pc.SetLocalDescription(offer); err != nil {
		return "", fmt.Errorf("media: %s: set local description: %w", what, err)
	}
	s.log.Debug("offer created", "ice_restart", restart)
	return offer.SDP, nil
}

// Answer takes the peer's SDP offer (the first one, or a later one such as
// an ICE restart) and returns our answer.
func (s *Session) Answer(ctx context.Context, offerSDP string) (string, error) {
	if err := s.checkOpen(ctx); err != nil {
		return "", err
	}
	if err := validateRemoteSDP(offerSDP); err != nil {
		return "", fmt.Errorf("media: answer: %w", err)
	}
	if err := s.setRemote(webrtc.SDPTypeOffer, offerSDP); err != nil {
		return "", fmt.Errorf("media: answer: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	answer, err := s.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("media: create answer: %w", err)
	}
	if err := s.pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("media: answer: set local description: %w", err)
	}
	return answer.SDP, nil
}

// SetAnswer takes the peer's SDP answer to our offer.
func (s *Session) SetAnswer(answerSDP string) error {
	if err := s.checkOpen(context.Background()); err != nil {
		return err
	}
	if err := validateRemoteSDP(answerSDP); err != nil {
		return fmt.Errorf("media: set answer: %w", err)
	}
	if err := s.setRemote(webrtc.SDPTypeAnswer, answerSDP); err != nil {
		return fmt.Errorf("media: set answer: %w", err)
	}
	// The answer starts our agent as the controlling side (or restarts it).
	s.trig.arm()
	return nil
}

func (s *Session) setRemote(typ webrtc.SDPType, raw string) error {
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: typ, SDP: raw}); err != nil {
		return fmt.Errorf("set remote description: %w", err)
	}
	s.mu.Lock()
	s.remoteSet = true
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, c := range pending {
		if err := s.pc.AddICECandidate(c); err != nil {
			s.log.Warn("queued remote candidate rejected", "candidate", c.Candidate, "err", err)
		}
	}
	return nil
}

// AddRemoteCandidate adds a candidate trickled by the peer, in the form
// OnLocalCandidate produces. "" (end of candidates) is accepted and ignored.
// Candidates that arrive before the remote description are queued.
func (s *Session) AddRemoteCandidate(candidateJSON string) error {
	init, ok, err := parseCandidate(candidateJSON)
	if err != nil || !ok {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if !s.remoteSet {
		defer s.mu.Unlock()
		if len(s.pending) >= maxPendingRemote {
			return fmt.Errorf("%w: more than %d candidates before the remote description", ErrBadCandidate, maxPendingRemote)
		}
		s.pending = append(s.pending, init)
		return nil
	}
	s.mu.Unlock()
	if err := s.pc.AddICECandidate(init); err != nil {
		return fmt.Errorf("media: add remote candidate %q: %w", init.Candidate, err)
	}
	return nil
}

func (s *Session) handleCandidate(c *webrtc.ICECandidate) {
	msg := ""
	if c != nil {
		b, err := json.Marshal(c.ToJSON())
		if err != nil {
			s.log.Error("encode local candidate", "err", err)
			return
		}
		msg = string(b)
	}
	s.enqueue(event{candidate: &msg})
}

// handleState runs on goroutines pion starts for each change, in no
// guaranteed order, so it reads the current state rather than trusting its
// argument; events are queued in the order of those reads.
func (s *Session) handleState(webrtc.PeerConnectionState) {
	s.mu.Lock()
	st := stateFromPeerConnection(s.pc.ConnectionState())
	if s.closed || st == s.state {
		s.mu.Unlock()
		return
	}
	s.state = st
	if st == StateConnected && !s.sendStarted {
		s.sendStarted = true
		s.startMedia(&s.sendOn)
	}
	if st != StateClosed {
		s.enqueue(event{state: st})
	}
	s.mu.Unlock()

	s.log.Info("call state", "state", st)
	if st == StateClosed {
		// The peer closed DTLS (it hung up): tear down our side too.
		go s.Close()
	}
}

func (s *Session) enqueue(e event) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if s.evFinal {
		return
	}
	if len(s.evQueue) >= maxQueuedEvents {
		s.log.Warn("event queue full; dropping event", "state", e.state)
		return
	}
	s.evQueue = append(s.evQueue, e)
	select {
	case s.evSignal <- struct{}{}:
	default:
	}
}

// deliverEvents runs the callbacks in order until the final (Closed) event.
func (s *Session) deliverEvents() {
	for {
		s.evMu.Lock()
		q := s.evQueue
		s.evQueue = nil
		final := s.evFinal
		s.evMu.Unlock()
		for _, e := range q {
			s.mu.Lock()
			onCandidate, onState, onPath := s.onCandidate, s.onState, s.onPath
			s.mu.Unlock()
			switch {
			case e.candidate != nil:
				if onCandidate != nil {
					onCandidate(*e.candidate)
				}
			case e.path != nil:
				if onPath != nil {
					onPath(*e.path)
				}
			case onState != nil:
				onState(e.state)
			}
		}
		if len(q) > 0 {
			continue
		}
		if final {
			return
		}
		<-s.evSignal
	}
}

// Close ends the call and releases every goroutine the session started. It
// finishes the recording (the Recorder itself is not closed) and reports
// StateClosed. It is safe to call more than once and from callbacks; every
// call returns once the session is fully closed.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.state = StateClosed
		s.mu.Unlock()
		close(s.quit)
		s.relays.stop()
		s.trig.disarm()
		err := s.pc.Close()
		if err != nil {
			err = fmt.Errorf("media: close peer connection: %w", err)
		}
		s.wg.Wait()
		if s.ogg != nil {
			if e := s.ogg.Close(); e != nil {
				err = errors.Join(err, fmt.Errorf("media: finish recording: %w", e))
			}
		}
		s.closeErr = err

		s.evMu.Lock()
		s.evQueue = append(s.evQueue, event{state: StateClosed})
		s.evFinal = true
		s.evMu.Unlock()
		select {
		case s.evSignal <- struct{}{}:
		default:
		}
		s.log.Info("call closed")
		close(s.done)
	})
	<-s.done
	return s.closeErr
}

// readSenderRTCP drains RTCP for our outgoing stream (so the report
// interceptor sees it) and takes round-trip times from receiver reports.
func (s *Session) readSenderRTCP() {
	defer s.wg.Done()
	for {
		pkts, _, err := s.rtps.ReadRTCP()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				s.log.Debug("sender RTCP reader stopped", "err", err)
			}
			return
		}
		if loss, ok := s.rtt.observe(pkts, s.sent.ssrc.Load(), s.cfg.Now()); ok {
			s.red.report(loss)
		}
	}
}
