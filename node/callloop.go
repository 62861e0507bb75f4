package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/media"
)

// callState is where a call is. Every transition is in Call.handle.
type callState int

const (
	stDialing    callState = iota // outgoing: invites going out
	stRinging                     // outgoing: a device rings; incoming: we ring
	stAnswering                   // incoming: answered, media being prepared
	stConnecting                  // answered; ICE and DTLS under way
	stActive                      // audio heard
	stEnded
)

func (s callState) String() string {
	switch s {
	case stDialing:
		return CallDialing
	case stRinging, stAnswering:
		return CallRinging
	case stConnecting:
		return CallConnecting
	case stActive:
		return CallActive
	}
	return CallEnded
}

// callSession is what a call needs of its media session; *media.Session
// is the one in production, a fake in the state machine's unit tests.
type callSession interface {
	CreateOffer(ctx context.Context) (string, error)
	Answer(ctx context.Context, offer string) (string, error)
	SetAnswer(sdp string) error
	AddRemoteCandidate(cand string) error
	RestartICE(ctx context.Context) (string, error)
	SetICEServers(servers []webrtc.ICEServer) error
	OnLocalCandidate(f func(string))
	OnState(f func(media.State))
	FirstAudio() <-chan struct{}
	Done() <-chan struct{}
	PacketsReceived() uint64
	Stats() media.Stats
	Close() error
}

var _ callSession = (*media.Session)(nil)

// callEnv is what a call needs of its node: the registry, media and the
// network. nodeEnv is the node's; the unit tests have their own.
type callEnv interface {
	logger() *slog.Logger
	publish(c *Call)
	activate(c *Call) bool
	ended(c *Call)
	lostGlare(peerHandle string, opts CallOptions)
	// answerSession makes the callee's media session with opts' audio.
	answerSession(ctx context.Context, opts CallOptions) (callSession, *iceSet, error)
	// refreshICE returns the ICE servers for an ICE restart.
	refreshICE(ctx context.Context, path, profile string) ([]webrtc.ICEServer, *iceSet, error)
	// reopen opens a new signalling link to device for call id, telling
	// it ack (the last frame received), and returns the peer's ack; it
	// dials through no circuit of relay avoid (the one the broken link
	// rode, likely dead: a dial through it would hang).
	reopen(ctx context.Context, device peer.ID, callID string, ack uint64, avoid peer.ID) (sigLink, uint64, error)
	// direct says whether an unlimited connection to device is open.
	direct(device peer.ID) bool
	// spawn runs f on a goroutine the node waits for at Close.
	spawn(f func())
}

// Call is one call, outgoing or incoming.
type Call struct {
	env    callEnv
	clk    clock.Clock
	t      CallTimings
	log    *slog.Logger
	id     string
	dir    Direction
	events chan callEvent
	done   chan struct{}
	ctx    context.Context // cancelled when the call ends: its workers stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the call's workers

	// mu guards info and snap, the copies clients read; the loop alone
	// writes them.
	mu   sync.Mutex
	info CallInfo
	snap struct {
		session    callSession
		ice        *iceSet
		restarts   int
		sigUp      bool
		lastPacket time.Time
	}

	// Owned by the loop goroutine.
	state    callState
	opts     CallOptions
	legs     map[peer.ID]*leg
	winner   *leg
	ice      *iceSet
	restarts int
	failed   int // ICE restarts since media last connected
	gaveWay  bool
	started  time.Time
	timers   [numTimers]timerSlot
	// restarting: an ICE restart is being prepared or awaits its answer;
	// restartWanted: one is due but signalling is down.
	restarting, restartWanted bool
	restartN                  uint32 // the ICE restart offered last: older answers are stale
	// answeringRestart: the callee is answering a restart off the loop;
	// held are the candidates and offers that came meanwhile, applied in
	// order once the offer is: a candidate of the new offer added before
	// it would be dropped (its ufrag is not yet known).
	answeringRestart bool
	held             []*callFrame
	answerReply      chan error // the Answer waiting for the accept to go out
	// early holds the candidates an outgoing leg gathered while its
	// invite was still being prepared (before evLegReady): legReady sends
	// them after the invite instead of losing them.
	early                 map[*leg][]string
	invitesDone           bool
	lastReason            string // why the last leg went, for a call no leg is left of
	reopening             bool
	deadRelay             peer.ID   // the relay whose circuit the last broken link rode
	nextUpgrade           time.Time // not before: move signalling off a relay circuit
	reopenDelay           time.Duration
	lastHeard, lastPacket time.Time
	packets               uint64
}

// leg is one callee device (outgoing) or the caller (incoming): its
// signalling link and media session. Owned by the call's loop.
type leg struct {
	device  peer.ID
	link    sigLink // nil while signalling is down
	gen     int     // generation of link: events of an older link are stale
	session callSession
	gate    *gate
	rang    bool
	offer   string   // incoming: the caller's offer
	early   []string // incoming: candidates that came before the session

	// outgoing: what the invite says of the caller.
	inviteFrom   string
	inviteRecord []byte

	sendable bool     // the invite (or accept) went out; candidates may follow
	queued   []string // local candidates waiting for that

	seq      uint64      // last sequence number sent
	log      []callFrame // sequenced frames sent and not known to be received
	recv     uint64      // last sequence number received
	lastSent time.Time
	pingSent time.Time // a ping went out and nothing came back since; zero otherwise
}

// maxHeldFrames bounds the frames a callee holds while it answers a restart.
const maxHeldFrames = 256

// maxFrameLog bounds the frames a leg keeps for resending after a resume.
const maxFrameLog = 256

// timer kinds.
const (
	tRing    = iota // ringing ends
	tRestart        // media disconnected long enough: restart ICE
	tStuck          // media did not (re)connect in time: restart ICE
	tGrace          // media closed: the hangup frame had its chance
	tTick           // liveness and pings
	tReopen         // retry re-opening signalling
	numTimers
)

type timerSlot struct {
	t   clock.Timer
	gen int
}

// Events posted to the loop.
type (
	callEvent interface{}

	evLegReady struct { // an outgoing invite's stream and session are ready
		l     *leg
		offer string
	}
	evInvitesDone struct {
		errs  []string
		reply chan error
	}
	evFrame struct {
		l   *leg
		gen int
		f   *callFrame
	}
	evLinkDown struct {
		l   *leg
		gen int
		err error
	}
	evLinkUp struct { // a resumed signalling link
		l       *leg
		link    sigLink
		peerAck uint64
		inbound bool // the peer opened it: we answer resumed
	}
	evReopenFailed struct {
		l   *leg
		err error
	}
	evLocalCandidate struct {
		l    *leg
		cand string
	}
	evMedia struct {
		l  *leg
		st media.State
	}
	evFirstAudio struct{ l *leg }
	evPath       struct {
		l *leg
		p media.Path
	}
	evMediaClosed struct{ l *leg }
	evTimer       struct{ kind, gen int }
	evAnswer      struct {
		opts  CallOptions
		reply chan error
	}
	evAnswerReady struct {
		l       *leg
		session callSession
		ice     *iceSet
		sdp     string
		err     error
	}
	evHangup struct {
		reason     string
		rejectOnly bool
		reply      chan error
	}
	evGiveWay struct {
		reply chan CallOptions
	}
	evRestartOffer struct {
		l       *leg
		n       uint32
		servers []webrtc.ICEServer
		ice     *iceSet
		sdp     string
		err     error
	}
	evRestartAnswer struct {
		l   *leg
		n   uint32
		sdp string
		ice *iceSet
		err error
	}
	evSync struct{ reply chan struct{} }
	// evDo runs f on the loop (tests read loop-owned state with it).
	evDo struct {
		f    func()
		done chan struct{}
	}
	evIce struct{ ice *iceSet } // an outgoing call's first ICE servers
	// evStartIncoming: an admitted incoming call rings.
	evStartIncoming struct{}
	// evRefuse: an incoming call the device cannot take.
	evRefuse struct{ reason string }
	// evResume: the caller opened a new stream for this call.
	evResume struct {
		remote  peer.ID
		link    sigLink
		peerAck uint64
	}
)

// newCall makes a call and starts its loop.
// maxQueuedCandidates bounds the local candidates a leg keeps until its
// first frame is out.
const maxQueuedCandidates = 256

// newCall makes a call and starts its loop.
func newCall(env callEnv, clk clock.Clock, t CallTimings, id string, dir Direction, peerHandle string, opts CallOptions) *Call {
	c := makeCall(env, clk, t, id, dir, peerHandle, opts)
	c.start()
	return c
}

// makeCall makes a call whose loop is not running yet: until start, its
// maker may set up the loop's state (an incoming call's leg).
func makeCall(env callEnv, clk clock.Clock, t CallTimings, id string, dir Direction, peerHandle string, opts CallOptions) *Call {
	c := &Call{env: env, clk: clk, t: t.withDefaults(), log: env.logger().With("call", id), id: id, dir: dir,
		events: make(chan callEvent, 256), done: make(chan struct{}), opts: opts, legs: map[peer.ID]*leg{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.started = clk.Now()
	c.info = CallInfo{ID: id, Peer: peerHandle, Direction: dir, StartedMS: c.started.UnixMilli()}
	if dir == CallOutgoing {
		c.state = stDialing
	} else {
		c.state = stRinging
	}
	c.info.State = c.state.String()
	return c
}

// start starts the call's loop, which owns its state from then on.
func (c *Call) start() { c.env.spawn(c.run) }

// post hands e to the loop; false once the call has ended.
func (c *Call) post(e callEvent) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.events <- e:
		return true
	case <-c.done:
		return false
	}
}

// sync waits until the loop has handled every event posted before it.
func (c *Call) sync() {
	reply := make(chan struct{})
	if c.post(evSync{reply: reply}) {
		select {
		case <-reply:
		case <-c.done:
		}
	}
}

// snapshot is the client's copy of the call's info.
func (c *Call) snapshot() CallInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// giveWay hands this outgoing call's audio ends over to the peer's call
// that won a glare, and ends this one. false if it had ended already.
func (c *Call) giveWay() (CallOptions, bool) {
	reply := make(chan CallOptions, 1)
	if !c.post(evGiveWay{reply: reply}) {
		return CallOptions{}, false
	}
	select {
	case opts, ok := <-reply:
		return opts, ok
	case <-c.done:
		select {
		case opts, ok := <-reply:
			return opts, ok
		default:
			return CallOptions{}, false
		}
	}
}

// run is the call's loop: the one goroutine that owns its state.
func (c *Call) run() {
	c.after(tTick, c.t.Tick)
	if c.dir == CallIncoming {
		// A callee that nobody answers is freed even if the caller never
		// says goodbye (a caller that died while ringing holds no slot).
		c.after(tRing, DefaultRingTimeout+5*time.Second)
	}
	c.lastHeard = c.clk.Now()
	for c.state != stEnded {
		c.handle(<-c.events)
	}
}

// after arms timer kind to fire in d, replacing the one armed before.
func (c *Call) after(kind int, d time.Duration) {
	s := &c.timers[kind]
	if s.t != nil {
		s.t.Stop()
	}
	s.gen++
	gen := s.gen
	s.t = c.clk.AfterFunc(d, func() { c.post(evTimer{kind: kind, gen: gen}) })
}

func (c *Call) stop(kind int) {
	s := &c.timers[kind]
	if s.t != nil {
		s.t.Stop()
		s.t = nil
	}
	s.gen++
}

func (c *Call) armed(kind int) bool { return c.timers[kind].t != nil }

// setState moves the call on and tells clients.
func (c *Call) setState(st callState) {
	if c.state == st {
		return
	}
	c.state = st
	c.mu.Lock()
	c.info.State = st.String()
	c.mu.Unlock()
	c.env.publish(c)
}

func (c *Call) updateSnap() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.winner != nil {
		c.snap.session = c.winner.session
		c.snap.sigUp = c.winner.link != nil
	}
	c.snap.ice, c.snap.restarts, c.snap.lastPacket = c.ice, c.restarts, c.lastPacket
}

// handle is every transition of the call. It is long on purpose: one
// case per event type, so every transition of the state machine reads in
// one switch; the work of each case lives in the functions it calls.
func (c *Call) handle(e callEvent) {
	now := c.clk.Now()
	switch e := e.(type) {
	case evSync:
		close(e.reply)
	case evDo:
		e.f()
		close(e.done)
	case evIce:
		c.ice = e.ice
	case evStartIncoming:
		for _, l := range c.legs {
			l.startReading(c)
			c.send(l, callFrame{Type: sigRinging})
		}
	case evRefuse:
		for _, l := range c.legs {
			c.send(l, callFrame{Type: sigReject, Reason: e.reason})
		}
		c.end(e.reason)
	case evResume:
		l := c.legs[e.remote]
		if l == nil || l != c.winner {
			e.link.send(callFrame{Type: sigHangup, Call: c.id, Seq: 1, Reason: "no such call"})
			e.link.close()
			return
		}
		c.linkUp(evLinkUp{l: l, link: e.link, peerAck: e.peerAck, inbound: true})
	case evLegReady:
		c.legReady(e.l, e.offer)
	case evInvitesDone:
		c.invitesDone = true
		switch {
		case len(c.legs) == 0 && c.winner == nil:
			msg := "none of the devices could be reached"
			if len(e.errs) > 0 {
				msg += " (" + e.errs[0] + ")"
			}
			e.reply <- fmt.Errorf("%w: %s", ErrNoDevice, msg)
			c.end(cmpOr(c.lastReason, "unreachable"))
		default:
			ring := c.opts.RingTimeout
			if ring == 0 {
				ring = DefaultRingTimeout
			}
			if c.winner == nil {
				c.after(tRing, ring)
			}
			e.reply <- nil
		}
	case evFrame:
		if e.gen != e.l.gen || c.legs[e.l.device] != e.l {
			return
		}
		c.lastHeard = now
		e.l.pingSent = time.Time{}
		c.frame(e.l, e.f)
	case evLinkDown:
		if e.gen != e.l.gen || c.legs[e.l.device] != e.l {
			return
		}
		c.linkDown(e.l, e.err)
	case evLinkUp:
		c.linkUp(e)
	case evReopenFailed:
		c.reopening = false
		if c.winner != e.l || e.l.link != nil {
			return // an upgrade that failed: the old link carries on
		}
		c.log.Info("signalling not re-opened", "err", e.err)
		c.reopenDelay = min(max(2*c.reopenDelay, 250*time.Millisecond), 2*time.Second)
		c.after(tReopen, c.reopenDelay)
	case evLocalCandidate:
		if c.legs[e.l.device] != e.l {
			// Only e.l's pointer is ours until it joins: its fields are
			// its invite's.
			if c.dir == CallOutgoing && c.winner == nil && len(c.early[e.l]) < maxQueuedCandidates {
				if c.early == nil {
					c.early = map[*leg][]string{}
				}
				c.early[e.l] = append(c.early[e.l], e.cand)
			}
			return
		}
		if !e.l.sendable {
			if len(e.l.queued) < maxQueuedCandidates {
				e.l.queued = append(e.l.queued, e.cand)
			}
			return
		}
		c.send(e.l, callFrame{Type: sigCandidate, Candidate: e.cand})
	case evMedia:
		if e.l != c.winner {
			return
		}
		c.mediaState(e.st)
	case evFirstAudio:
		if e.l != c.winner || c.state != stConnecting {
			return
		}
		c.mu.Lock()
		c.info.SetupMS = float64(now.Sub(c.started).Microseconds()) / 1000
		c.mu.Unlock()
		c.setState(stActive)
	case evPath:
		if e.l == c.winner {
			c.pathChanged(now, e.p)
		}
	case evMediaClosed:
		if e.l == c.winner && !c.armed(tGrace) {
			// A hangup closes the peer's media and sends a hangup frame;
			// the frame may come second. Give it a moment to say why.
			c.after(tGrace, c.t.HangupGrace)
		}
	case evTimer:
		if e.gen != c.timers[e.kind].gen {
			return // stopped or re-armed since
		}
		c.timers[e.kind].t = nil
		c.timer(e.kind)
	case evAnswer:
		c.answer(e)
	case evAnswerReady:
		c.answerReady(e)
	case evHangup:
		if e.rejectOnly && (c.dir != CallIncoming || c.state != stRinging) {
			e.reply <- fmt.Errorf("%w: only a ringing incoming call can be rejected", ErrCallState)
			return
		}
		c.hangupAll(e.reason)
		e.reply <- nil
	case evGiveWay:
		if c.state != stDialing && c.state != stRinging {
			close(e.reply)
			return
		}
		c.gaveWay = true
		e.reply <- c.opts
		c.hangupAll(rejectGlare)
	case evRestartOffer:
		c.restartOffer(e)
	case evRestartAnswer:
		c.answeringRestart = false
		if e.l != c.winner {
			return
		}
		if e.err != nil {
			c.failCall(e.l, "bad ICE restart offer: "+e.err.Error(), "bad restart")
			return
		}
		if e.ice != nil {
			c.ice = e.ice
		}
		c.restarts++
		c.updateSnap()
		c.send(e.l, callFrame{Type: sigRestartAnswer, SDP: e.sdp, Restart: e.n})
		for len(c.held) > 0 && !c.answeringRestart && c.state != stEnded {
			f := c.held[0]
			c.held = c.held[1:]
			c.callerFrame(e.l, f)
		}
	default:
		panic(fmt.Sprintf("call: unknown event %T", e))
	}
}

// legReady adds an outgoing leg whose stream and session are ready and
// sends its invite, unless the call was decided meanwhile.
func (c *Call) legReady(l *leg, offer string) {
	early := c.early[l]
	delete(c.early, l)
	if c.state != stDialing && c.state != stRinging || c.winner != nil {
		c.closeLeg(l)
		return
	}
	c.legs[l.device] = l
	l.queued = append(early, l.queued...)
	l.startReading(c)
	invite := callFrame{Type: sigInvite, SDP: offer}
	invite.From, invite.Record = l.inviteFrom, l.inviteRecord
	c.sendFirst(l, invite)
}

// frame applies one signalling frame from l.
func (c *Call) frame(l *leg, f *callFrame) {
	if f.Ack > 0 {
		l.trimLog(f.Ack)
	}
	if f.Seq > 0 {
		if f.Seq <= l.recv {
			return // seen before the link was resumed
		}
		l.recv = f.Seq
	}
	switch f.Type {
	case sigPing:
		c.sendUnsequenced(l, callFrame{Type: sigPong})
		return
	case sigPong:
		return
	}
	if c.dir == CallOutgoing {
		c.calleeFrame(l, f)
	} else {
		c.callerFrame(l, f)
	}
}

func (c *Call) calleeFrame(l *leg, f *callFrame) {
	switch f.Type {
	case sigRinging:
		if !l.rang {
			l.rang = true
			c.mu.Lock()
			c.info.DevicesRang++
			c.mu.Unlock()
		}
		if c.state == stDialing {
			c.setState(stRinging)
		} else {
			c.env.publish(c)
		}
	case sigAccept:
		c.accepted(l, f.SDP)
	case sigCandidate:
		if err := l.session.AddRemoteCandidate(f.Candidate); err != nil {
			c.failLeg(l, "bad candidate from callee: "+err.Error(), "bad candidate")
		}
	case sigRestartAnswer:
		if l != c.winner || f.Restart != c.restartN || !c.restarting {
			return // an answer to an offer a newer one replaced
		}
		c.restarting = false
		if err := l.session.SetAnswer(f.SDP); err != nil {
			c.failCall(l, "bad ICE restart answer: "+err.Error(), "bad restart answer")
		}
	case sigReject:
		reason := f.Reason
		if reason == "" {
			reason = "declined"
		}
		if reason == rejectGlare && c.winner == nil && !c.gaveWay {
			c.gaveWay = true
			c.env.lostGlare(c.info.Peer, c.opts)
			c.hangupAll(rejectGlare)
			return
		}
		c.dropLeg(l, reason)
	case sigHangup:
		c.remoteHangup(l, f)
	default:
		c.failLeg(l, fmt.Sprintf("unexpected %s from callee", f.Type), "")
	}
}

func (c *Call) callerFrame(l *leg, f *callFrame) {
	if c.answeringRestart && (f.Type == sigCandidate || f.Type == sigRestart) {
		if len(c.held) < maxHeldFrames {
			c.held = append(c.held, f)
		}
		return
	}
	switch f.Type {
	case sigCandidate:
		if l.session == nil {
			if len(l.early) < 64 {
				l.early = append(l.early, f.Candidate)
			}
			return
		}
		if err := l.session.AddRemoteCandidate(f.Candidate); err != nil {
			c.failCall(l, "bad candidate from caller: "+err.Error(), "bad candidate")
		}
	case sigRestart:
		if l.session == nil || c.winner != l {
			c.failCall(l, "ICE restart before answer", "")
			return
		}
		c.startRestartAnswer(l, f)
	case sigCancel:
		reason := f.Reason
		if reason == "" {
			reason = "cancelled"
		}
		if reason == ErrAnsweredElsewhere.Error() {
			c.mu.Lock()
			c.info.AnsweredElsewhere = true
			c.mu.Unlock()
		}
		c.end(reason)
	case sigHangup:
		c.remoteHangup(l, f)
	default:
		c.failCall(l, fmt.Sprintf("unexpected %s from caller", f.Type), "")
	}
}

// accepted handles a callee device's accept: the first wins the call.
func (c *Call) accepted(l *leg, sdp string) {
	if c.winner != nil || c.state == stEnded {
		c.send(l, callFrame{Type: sigCancel, Reason: ErrAnsweredElsewhere.Error()})
		c.dropLeg(l, "")
		return
	}
	c.winner = l
	c.stop(tRing)
	c.mu.Lock()
	c.info.Device = l.device.String()
	c.mu.Unlock()
	for d, o := range c.legs {
		if o != l {
			c.send(o, callFrame{Type: sigCancel, Reason: ErrAnsweredElsewhere.Error()})
			c.closeLeg(o)
			delete(c.legs, d)
		}
	}
	c.env.activate(c)
	if err := l.gate.decide(true); err != nil {
		c.log.Warn("recording: the start of the call was not written", "err", err)
	}
	if err := l.session.SetAnswer(sdp); err != nil {
		c.failCall(l, "bad answer from callee: "+err.Error(), "bad answer")
		return
	}
	c.watchMedia(l)
	c.after(tStuck, c.t.SetupFallback)
	c.setState(stConnecting)
}

// answer starts answering an incoming ringing call.
func (c *Call) answer(e evAnswer) {
	if c.dir != CallIncoming || c.state != stRinging {
		e.opts.discard()
		e.reply <- fmt.Errorf("%w: call %s is %s", ErrCallState, c.id, c.state)
		return
	}
	if !c.env.activate(c) {
		e.opts.discard()
		e.reply <- ErrBusy
		return
	}
	c.opts = e.opts
	c.state = stAnswering
	c.answerReply = e.reply
	c.stop(tRing)
	var l *leg
	for _, o := range c.legs {
		l = o
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s, ice, err := c.env.answerSession(c.ctx, e.opts)
		if err != nil {
			c.post(evAnswerReady{l: l, err: fmt.Errorf("no path: %w", err)})
			return
		}
		s.OnLocalCandidate(func(cand string) { c.post(evLocalCandidate{l: l, cand: cand}) })
		actx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		sdp, err := s.Answer(actx, l.offer)
		cancel()
		if err != nil {
			_ = s.Close() // it carried no audio: nothing to report
			c.post(evAnswerReady{l: l, err: fmt.Errorf("bad offer: %w", err)})
			return
		}
		if !c.post(evAnswerReady{l: l, session: s, ice: ice, sdp: sdp}) {
			_ = s.Close() // the call ended first: it carried no audio
		}
	}()
}

func (c *Call) answerReady(e evAnswerReady) {
	reply := c.answerReply
	c.answerReply = nil
	if c.state != stAnswering {
		if e.session != nil {
			_ = e.session.Close() // it carried no audio: nothing to report
		}
		return
	}
	l := e.l
	if e.err != nil {
		c.send(l, callFrame{Type: sigReject, Reason: "no path"})
		c.end(e.err.Error())
		if reply != nil {
			reply <- e.err
		}
		return
	}
	l.session = e.session
	c.winner = l
	c.ice = e.ice
	for _, cand := range l.early {
		if err := l.session.AddRemoteCandidate(cand); err != nil {
			c.log.Info("early candidate refused", "err", err)
		}
	}
	l.early = nil
	c.watchMedia(l)
	c.sendFirst(l, callFrame{Type: sigAccept, SDP: e.sdp})
	c.setState(stConnecting)
	if reply != nil {
		reply <- nil
	}
}

// timer handles a timer that fired.
func (c *Call) timer(kind int) {
	switch kind {
	case tRing:
		if c.dir == CallOutgoing {
			for _, l := range c.legs {
				c.send(l, callFrame{Type: sigCancel, Reason: "timeout"})
			}
		}
		c.end("no answer")
	case tRestart, tStuck:
		c.restart()
	case tGrace:
		c.end("media closed")
	case tTick:
		c.tick()
		if c.state != stEnded {
			c.after(tTick, c.t.Tick)
		}
	case tReopen:
		if c.winner != nil && c.winner.link == nil {
			c.reopen()
		}
	}
}

// linkDown handles a broken signalling link. Before an answer the leg is
// gone; after it the call goes on on its media while the caller re-opens
// signalling over whatever reaches the peer.
func (c *Call) linkDown(l *leg, err error) {
	if l.link != nil {
		c.deadRelay = l.link.relay()
		l.link.close() // its stream ends once our side is written
	}
	l.link = nil
	l.pingSent = time.Time{}
	c.updateSnap()
	if l != c.winner {
		if c.dir == CallIncoming {
			c.end("connection lost")
			return
		}
		c.dropLeg(l, "connection lost")
		return
	}
	c.log.Info("call signalling lost; media continues", "err", err)
	if c.dir == CallOutgoing {
		c.reopenDelay = 0
		c.reopen()
		return
	}
	// The caller re-opens first; the callee tries too after a moment, for
	// a caller it can reach better than the caller reaches it (a public
	// caller of a NATed callee whose relay reservations are gone). If
	// neither link nor media comes back, the call ends as lost.
	c.reopenDelay = calleeReopenDelay
	c.after(tReopen, calleeReopenDelay)
}

// calleeReopenDelay is how long a callee leaves the caller to re-open a
// broken signalling link before it tries itself.
const calleeReopenDelay = time.Second

// reopen starts one attempt to open the winner's signalling anew: after
// the link broke, or to move it onto a direct connection.
func (c *Call) reopen() {
	l := c.winner
	if l == nil || c.reopening || c.state == stEnded {
		return
	}
	c.reopening = true
	ack, avoid := l.recv, c.deadRelay
	c.deadRelay = "" // the next attempt may try it again
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		link, peerAck, err := c.env.reopen(ctx, l.device, c.id, ack, avoid)
		if err != nil {
			c.post(evReopenFailed{l: l, err: err})
			return
		}
		if !c.post(evLinkUp{l: l, link: link, peerAck: peerAck}) {
			link.reset(false)
		}
	}()
}

// linkUp takes a resumed signalling link: frames the peer has not seen are
// sent again, and a restart that waited for it goes out.
func (c *Call) linkUp(e evLinkUp) {
	l := e.l
	if !e.inbound {
		c.reopening = false
	}
	if c.state == stEnded || c.winner != l || c.legs[l.device] != l {
		e.link.reset(false)
		return
	}
	// When both sides re-open at once, the caller's newest link wins: the
	// caller takes a link the callee opened only while it has none, and
	// the callee keeps the one it took from the caller over its own.
	switch {
	case e.inbound && c.dir == CallOutgoing && l.link != nil:
		e.link.send(callFrame{Type: sigHangup, Call: c.id, Seq: 1, Reason: "signalling already resumed"})
		e.link.close()
		return
	case !e.inbound && c.dir == CallIncoming && l.link != nil:
		e.link.reset(false)
		return
	}
	if l.link != nil {
		l.link.close()
	}
	l.link = e.link
	l.gen++
	l.pingSent = time.Time{}
	c.lastHeard = c.clk.Now()
	c.stop(tReopen)
	l.startReading(c)
	if e.inbound {
		c.sendUnsequenced(l, callFrame{Type: sigResumed})
	}
	l.trimLog(e.peerAck)
	for _, f := range l.log {
		f.Ack = l.recv
		l.link.send(f)
	}
	l.lastSent = c.clk.Now()
	c.updateSnap()
	c.log.Info("call signalling resumed", "resent", len(l.log), "inbound", e.inbound)
	if c.restartWanted {
		// A restart came due while nobody could hear it. (One that went
		// out before the link broke was just sent again from the log, and
		// its answer comes back the same way: a second restart now would
		// race it and strand the candidates of both.)
		c.startRestart(l)
	}
}

// send sends a sequenced frame on l: kept until the peer acknowledges it,
// so a resumed link carries what the broken one lost.
func (c *Call) send(l *leg, f callFrame) {
	l.seq++
	f.Seq, f.Call = l.seq, c.id
	if len(l.log) == maxFrameLog {
		l.log = l.log[1:]
	}
	l.log = append(l.log, f)
	c.sendUnsequenced(l, f)
}

// sendUnsequenced sends f now if l has a link (pings, pongs, resumed).
func (c *Call) sendUnsequenced(l *leg, f callFrame) {
	if l.link == nil {
		return
	}
	f.Call, f.Ack = c.id, l.recv
	l.link.send(f)
	l.lastSent = c.clk.Now()
}

// sendFirst sends a leg's first frame with a payload (invite or accept)
// and then every candidate gathered meanwhile.
func (c *Call) sendFirst(l *leg, f callFrame) {
	c.send(l, f)
	l.sendable = true
	for _, cand := range l.queued {
		c.send(l, callFrame{Type: sigCandidate, Candidate: cand})
	}
	l.queued = nil
}

func (l *leg) trimLog(ack uint64) {
	i := 0
	for i < len(l.log) && l.log[i].Seq <= ack {
		i++
	}
	l.log = l.log[i:]
}

// dropLeg forgets a leg that ended; when no leg is left before an answer
// (and every invite is out), the call ends with the last reason heard.
func (c *Call) dropLeg(l *leg, reason string) {
	if c.legs[l.device] == l {
		delete(c.legs, l.device)
	}
	c.closeLeg(l)
	if reason != "" {
		c.lastReason = reason
	}
	switch {
	case l == c.winner:
		c.end(reason)
	case c.winner == nil && len(c.legs) == 0 && c.invitesDone:
		c.end(cmpOr(c.lastReason, "unreachable"))
	}
}

// failLeg ends a leg that broke the protocol, telling its device why.
func (c *Call) failLeg(l *leg, reason, tell string) {
	if tell != "" {
		c.send(l, callFrame{Type: sigHangup, Reason: tell})
	}
	if l.link != nil {
		l.link.close()
		l.link = nil
	}
	c.dropLeg(l, reason)
}

// failCall ends the call over a protocol error, telling the peer.
func (c *Call) failCall(l *leg, reason, tell string) {
	if tell != "" {
		c.send(l, callFrame{Type: sigHangup, Reason: tell})
	}
	c.end(reason)
}

func (c *Call) remoteHangup(l *leg, f *callFrame) {
	reason := "remote hung up"
	if f.Reason != "" {
		reason += ": " + f.Reason
	}
	if c.dir == CallOutgoing && l != c.winner {
		c.dropLeg(l, reason)
		return
	}
	c.end(reason)
}

// hangupAll ends the call from this side, telling every device.
func (c *Call) hangupAll(reason string) {
	for _, l := range c.legs {
		switch {
		case c.winner != nil:
			c.send(l, callFrame{Type: sigHangup})
		case c.dir == CallOutgoing:
			c.send(l, callFrame{Type: sigCancel, Reason: "cancelled"})
		default:
			c.send(l, callFrame{Type: sigReject, Reason: "declined"})
		}
	}
	c.end(reason)
}

// end finishes the call once: closes every leg and the audio ends, frees
// the device, and stops every worker.
func (c *Call) end(reason string) {
	if c.state == stEnded {
		return
	}
	c.state = stEnded
	for i := range c.timers {
		c.stop(i)
	}
	final := c.Info().Stats // the last statistics, before the media closes
	c.mu.Lock()
	c.info.State, c.info.Reason, c.info.Stats = CallEnded, reason, final
	c.info.EndedMS = c.clk.Now().UnixMilli()
	c.mu.Unlock()
	for _, l := range c.legs {
		c.closeLeg(l)
	}
	if !c.gaveWay {
		// Else they went on to the call that won the glare.
		if err := c.opts.Close(); err != nil {
			c.log.Warn("call audio files not closed cleanly", "err", err)
		}
	}
	if c.answerReply != nil {
		c.answerReply <- fmt.Errorf("%w: call ended (%s)", ErrCallState, reason)
		c.answerReply = nil
	}
	c.env.ended(c)
	close(c.done)
	c.cancel()
	c.wg.Wait()
	c.log.Info("call ended", "peer", c.info.Peer, "reason", reason)
	c.env.publish(c)
}

// close closes the leg's link (flushing what was queued) and session. Its
// error is the session's: a recording that could not be finished.
func (l *leg) close() error {
	if l.link != nil {
		l.link.close()
		l.link = nil
	}
	var err error
	if l.session != nil {
		err = l.session.Close()
	}
	if l.gate != nil {
		_ = l.gate.decide(false) // shuts an undecided gate: never writes, never fails
	}
	return err
}

// closeLeg closes l, logging what its session could not finish (the
// recording of the leg that won).
func (c *Call) closeLeg(l *leg) {
	if err := l.close(); err != nil {
		c.log.Warn("call leg closed with an error", "device", l.device, "err", err)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
