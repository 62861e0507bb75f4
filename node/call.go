package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/media"
)

// Call defaults.
const (
	DefaultRingTimeout = 30 * time.Second
	callDialTimeout    = 10 * time.Second
	restartAfter       = 250 * time.Millisecond // disconnected this long: restart ICE
	setupFallback      = 5 * time.Second        // not connected this long after the answer: restart ICE with every tier
	restartRetry       = 3 * time.Second        // an ICE restart not connected this long: restart again
	maxFailedRestarts  = 5                      // restarts without media connecting in between: give up
	keepEndedCalls     = 20
	hangupGrace        = time.Second // media closed: wait this long for the reason on the signalling stream
)

// How long a call's signalling stream may say nothing before it counts as
// dead, and how often each side of a connected call pings to keep it alive.
// Variables so a test can shorten them.
var (
	callIdleTimeout  = 10 * time.Minute
	callPingInterval = time.Minute
)

// Call errors.
var (
	ErrNoSuchCall   = errors.New("no such call")
	ErrNoDevice     = errors.New("no device of that handle answered the invite")
	ErrCallState    = errors.New("call is not in a state that allows this")
	ErrBusy         = errors.New("already in a call")
	errAnsweredElse = "answered elsewhere"
)

// Call states as clients see them.
const (
	CallDialing    = "dialing"    // outgoing: invites on their way
	CallRinging    = "ringing"    // a device rings
	CallConnecting = "connecting" // answered; ICE and DTLS under way
	CallActive     = "active"     // audio flows
	CallEnded      = "ended"
)

// CallOptions are one side's audio ends. The node takes ownership of Closers
// and closes them when the call ends.
type CallOptions struct {
	Source   media.Source // nil: silence
	Sink     media.Sink   // nil: discard
	Recorder io.Writer    // nil: no Ogg Opus recording
	Closers  []io.Closer
	// RingTimeout bounds ringing (caller side); 0 means DefaultRingTimeout.
	RingTimeout time.Duration
	// Path and Profile override the node's policy for this call ("" keeps
	// Config.Path and Config.Profile).
	Path, Profile string
}

// Close closes what the options own.
func (o CallOptions) Close() {
	for _, c := range o.Closers {
		c.Close()
	}
}

// CallInfo is what clients see of a call.
type CallInfo struct {
	ID        string `json:"id"`
	Peer      string `json:"peer"`      // the other handle
	Direction string `json:"direction"` // "outgoing" or "incoming"
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"` // why it ended
	Device    string `json:"device,omitempty"` // the peer's device on the call
	// DevicesRang counts the callee's devices that rang (outgoing calls).
	DevicesRang int `json:"devices_rang,omitempty"`
	// AnsweredElsewhere is set on a device that rang while another device
	// of its account took the call.
	AnsweredElsewhere bool       `json:"answered_elsewhere,omitempty"`
	StartedMS         int64      `json:"started_ms"`
	SetupMS           float64    `json:"setup_ms,omitempty"` // start to first decoded audio
	EndedMS           int64      `json:"ended_ms,omitempty"`
	Stats             *CallStats `json:"stats,omitempty"`
}

// CallStats is a call's health in units a person reads.
type CallStats struct {
	Tier        string  `json:"tier"`            // "direct", "supernode" or "cloud": who carries the media
	Path        string  `json:"path"`            // "host", "srflx", "prflx" or "relay" (the less direct end)
	PathDetail  string  `json:"path_detail"`     // local -> remote, and through which relay
	Relay       string  `json:"relay,omitempty"` // TURN server carrying the call
	RTTMS       float64 `json:"rtt_ms"`
	JitterMS    float64 `json:"jitter_ms"`
	LossPct     float64 `json:"loss_pct"`
	ConcealedMS float64 `json:"concealed_ms"`
	BitrateKbps float64 `json:"bitrate_kbps"`
	MOS         float64 `json:"mos"`
	PacketsIn   uint64  `json:"packets_in"`
	PacketsOut  uint64  `json:"packets_out"`
	ICERestarts int     `json:"ice_restarts"`
	MediaState  string  `json:"media_state"`
}

// Call is one call, outgoing or incoming.
type Call struct {
	n    *Node
	opts CallOptions

	mu       sync.Mutex
	info     CallInfo
	legs     map[peer.ID]*leg // outgoing: one per callee device
	winner   *leg
	restarts int
	ice      *iceSet
	started  time.Time
	done     chan struct{}
	ended    bool
	gaveWay  bool // lost a glare: its audio ends went to the peer's call
}

// leg is the signalling stream to one device, with its media session.
type leg struct {
	device  peer.ID
	stream  network.Stream
	wmu     sync.Mutex
	session *media.Session
	gate    *gate
	rang    bool
	closed  bool

	// incoming side: the offer and the candidates that came before we had
	// a session to give them to.
	offer string
	early []string

	sendable bool     // the invite (or accept) went out; candidates may follow
	queued   []string // local candidates waiting for that
}

func (l *leg) send(f callFrame) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.sendLocked(f)
}

func (l *leg) sendLocked(f callFrame) error {
	l.stream.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return wire.WriteJSON(l.stream, f, MaxCallFrame)
}

// localCandidate trickles a candidate once the leg's first frame is out.
func (l *leg) localCandidate(call, c string) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if !l.sendable {
		l.queued = append(l.queued, c)
		return
	}
	l.sendLocked(callFrame{Type: sigCandidate, Call: call, Candidate: c})
}

// sendFirst sends the leg's first frame with a payload (invite or accept)
// and then every candidate gathered meanwhile.
func (l *leg) sendFirst(f callFrame) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.sendLocked(f); err != nil {
		return err
	}
	l.sendable = true
	for _, c := range l.queued {
		l.sendLocked(callFrame{Type: sigCandidate, Call: f.Call, Candidate: c})
	}
	l.queued = nil
	return nil
}

func (l *leg) close() {
	l.wmu.Lock()
	closed := l.closed
	l.closed = true
	l.wmu.Unlock()
	if closed {
		return
	}
	if l.session != nil {
		l.session.Close()
	}
	if l.gate != nil {
		l.gate.decide(false)
	}
	l.stream.Close()
}

func newCallID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// calls is the node's call registry.
type calls struct {
	mu     sync.Mutex
	byID   map[string]*Call
	ended  []*Call
	active *Call // connecting or active: the one call a device takes part in
	// glare holds, per peer handle, the audio ends of a call that lost a
	// glare to a call of that peer's not yet here: answered with them when
	// it comes, within glareWindow.
	glare map[string]glareWait
}

type glareWait struct {
	opts  CallOptions
	until time.Time
}

// glareWindow is how long a device that lost a glare waits for the
// winning call to arrive.
const glareWindow = 10 * time.Second

// rejectGlare is the reject reason of a call that lost a glare.
const rejectGlare = "glare"

// ActiveCall is the call this device is connecting or talking in, or nil.
func (n *Node) ActiveCall() *Call {
	n.calls.mu.Lock()
	defer n.calls.mu.Unlock()
	return n.calls.active
}

// lostGlare handles the peer's refusal of our call because its own call to
// us has the lower ID: both sides wanted to talk, so our call ends on every
// device and the peer's is answered with our audio ends, at once if it is
// ringing here already, else when it arrives.
func (c *Call) lostGlare() {
	n := c.n
	c.mu.Lock()
	if c.ended || c.gaveWay {
		// Our call gave way already: the peer's invite came first and was
		// answered (admitIncoming).
		c.mu.Unlock()
		return
	}
	opts := c.opts
	c.gaveWay = true
	c.mu.Unlock()
	n.calls.mu.Lock()
	ringing := n.pendingCall(c.info.Peer, "incoming")
	if ringing == nil {
		if n.calls.glare == nil {
			n.calls.glare = map[string]glareWait{}
		}
		if old, ok := n.calls.glare[c.info.Peer]; ok {
			old.opts.Close()
		}
		n.calls.glare[c.info.Peer] = glareWait{opts: opts, until: n.cfg.Now().Add(glareWindow)}
	}
	n.calls.mu.Unlock()
	c.hangup(rejectGlare)
	if ringing != nil {
		go ringing.Answer(n.ctx, opts)
	}
}

// Info is a snapshot of the call, with statistics while it has media.
func (c *Call) Info() CallInfo {
	c.mu.Lock()
	info := c.info
	var s *media.Session
	if c.winner != nil {
		s = c.winner.session
	}
	restarts, ice := c.restarts, c.ice
	c.mu.Unlock()
	if s != nil && info.State != CallEnded {
		ms := s.Stats()
		st := statsOf(ms)
		st.ICERestarts = restarts
		if ice != nil {
			st.Tier = ice.tierOf(ms.Path)
		}
		info.Stats = &st
	}
	return info
}

// Done is closed when the call has ended.
func (c *Call) Done() <-chan struct{} { return c.done }

// ID is the call's ID.
func (c *Call) ID() string { return c.info.ID }

// MediaStats is the raw statistics of the call's media session.
func (c *Call) MediaStats() (media.Stats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.winner == nil || c.winner.session == nil {
		return media.Stats{}, false
	}
	return c.winner.session.Stats(), true
}

func statsOf(s media.Stats) CallStats {
	path := s.Path.LocalType
	if rank(s.Path.RemoteType) > rank(path) {
		path = s.Path.RemoteType
	}
	detail := ""
	if s.Path.Local != "" {
		detail = fmt.Sprintf("%s %s -> %s %s (%s)", s.Path.LocalType, s.Path.Local, s.Path.RemoteType, s.Path.Remote, s.Path.Protocol)
	}
	relay := ""
	if s.Path.RelayServer != "" {
		relay = s.Path.RelayServer + " over " + s.Path.RelayProtocol
		detail += " via " + relay
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return CallStats{Path: path, PathDetail: detail, Relay: relay, RTTMS: ms(s.RTT), JitterMS: ms(s.Jitter),
		LossPct: s.LossPercent, ConcealedMS: ms(s.Concealed), BitrateKbps: s.ReceiveBitrate / 1000, MOS: s.MOS,
		PacketsIn: s.PacketsReceived, PacketsOut: s.PacketsSent, MediaState: s.State.String()}
}

func rank(candType string) int {
	switch candType {
	case "host":
		return 1
	case "srflx", "prflx":
		return 2
	case "relay":
		return 3
	}
	return 0
}

func (n *Node) publishCall(c *Call) {
	info := c.Info()
	n.events.publish(Event{Type: "call", Peer: info.Peer, Call: &info})
}

// setState moves the call on and tells clients.
func (c *Call) setState(state string) {
	c.mu.Lock()
	if c.ended || c.info.State == state {
		c.mu.Unlock()
		return
	}
	c.info.State = state
	c.mu.Unlock()
	c.n.publishCall(c)
}

// end finishes the call once: closes every leg and the audio ends.
func (c *Call) end(reason string) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	c.info.State, c.info.Reason = CallEnded, reason
	c.info.EndedMS = c.n.cfg.Now().UnixMilli()
	legs := make([]*leg, 0, len(c.legs))
	for _, l := range c.legs {
		legs = append(legs, l)
	}
	gaveWay := c.gaveWay
	c.mu.Unlock()
	for _, l := range legs {
		l.close()
	}
	if !gaveWay {
		c.opts.Close() // else they went on to the call that won the glare
	}
	n := c.n
	n.calls.mu.Lock()
	if n.calls.active == c {
		n.calls.active = nil
	}
	delete(n.calls.byID, c.info.ID)
	n.calls.ended = append(n.calls.ended, c)
	if len(n.calls.ended) > keepEndedCalls {
		n.calls.ended = n.calls.ended[1:]
	}
	n.calls.mu.Unlock()
	close(c.done)
	n.log.Info("call ended", "call", c.info.ID, "peer", c.info.Peer, "reason", reason)
	n.publishCall(c)
}

// Calls lists current calls and the most recent ended ones.
func (n *Node) Calls() []CallInfo {
	n.calls.mu.Lock()
	list := make([]*Call, 0, len(n.calls.byID)+len(n.calls.ended))
	for _, c := range n.calls.byID {
		list = append(list, c)
	}
	list = append(list, n.calls.ended...)
	n.calls.mu.Unlock()
	out := make([]CallInfo, 0, len(list))
	for _, c := range list {
		out = append(out, c.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedMS < out[j].StartedMS })
	return out
}

// FindCall returns a call by ID; "" means the only ringing incoming call, or
// else the only current call.
func (n *Node) FindCall(id string) (*Call, error) {
	n.calls.mu.Lock()
	defer n.calls.mu.Unlock()
	if id != "" {
		if c, ok := n.calls.byID[id]; ok {
			return c, nil
		}
		for _, c := range n.calls.ended {
			if c.info.ID == id {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%w %s", ErrNoSuchCall, id)
	}
	var ringing, all []*Call
	for _, c := range n.calls.byID {
		all = append(all, c)
		c.mu.Lock()
		if c.info.Direction == "incoming" && c.info.State == CallRinging {
			ringing = append(ringing, c)
		}
		c.mu.Unlock()
	}
	switch {
	case len(ringing) == 1:
		return ringing[0], nil
	case len(ringing) == 0 && len(all) == 1:
		return all[0], nil
	case len(all) == 0:
		return nil, fmt.Errorf("%w: no call in progress", ErrNoSuchCall)
	}
	return nil, fmt.Errorf("%w: several calls; name one by ID (parley calls)", ErrNoSuchCall)
}

// supernodeICE asks the connected supernodes for their STUN servers; on an
// ICE restart (fresh) it uses their last answers instead.
func (n *Node) supernodeICE(ctx context.Context, fresh bool) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, sn := range n.cfg.Bootstrap {
		if n.host.Network().Connectedness(sn.ID) != network.Connected {
			continue
		}
		var urls []string
		if fresh {
			// An ICE restart does not wait on a supernode that may be the
			// thing that died: it takes what the supernode said last.
			n.creds.mu.Lock()
			urls = n.creds.stun[sn.ID]
			n.creds.mu.Unlock()
		} else {
			var err error
			if urls, err = discovery.QueryServices(ctx, n.host, sn.ID); err != nil {
				n.log.Debug("supernode services", "supernode", sn.ID, "err", err)
				continue
			}
			n.creds.mu.Lock()
			if n.creds.stun == nil {
				n.creds.stun = map[peer.ID][]string{}
			}
			n.creds.stun[sn.ID] = urls
			n.creds.mu.Unlock()
		}
		if len(urls) > 0 {
			out = append(out, webrtc.ICEServer{URLs: urls})
		}
	}
	return out
}

// Call rings every device of a handle. It returns once the invites are out;
// watch the events, Info or Done for what happens next.
func (n *Node) Call(ctx context.Context, handle string, opts CallOptions) (*Call, error) {
	if opts.RingTimeout == 0 {
		opts.RingTimeout = DefaultRingTimeout
	}
	fail := func(err error) (*Call, error) {
		opts.Close()
		return nil, err
	}
	rec, err := n.resolve(ctx, handle, true)
	if err != nil {
		return fail(err)
	}
	var devices []peer.ID
	for _, d := range rec.DeviceIDs() {
		if d != n.ID() {
			devices = append(devices, d)
		}
	}
	if len(devices) == 0 {
		return fail(fmt.Errorf("%w: %s has no other device", ErrNoDevice, handle))
	}
	c := &Call{n: n, opts: opts, legs: map[peer.ID]*leg{}, done: make(chan struct{}), started: n.cfg.Now(),
		info: CallInfo{ID: newCallID(), Peer: rec.Handle, Direction: "outgoing", State: CallDialing, StartedMS: n.cfg.Now().UnixMilli()}}
	n.calls.mu.Lock()
	if n.calls.active != nil {
		n.calls.mu.Unlock()
		return fail(ErrBusy)
	}
	n.calls.byID[c.info.ID] = c
	n.calls.mu.Unlock()
	n.publishCall(c)

	mcfg, ice, err := n.callMedia(ctx, opts.Path, opts.Profile, false)
	if err != nil {
		c.end("no path: " + err.Error())
		return nil, err
	}
	c.mu.Lock()
	c.ice = ice
	c.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for _, d := range devices {
		wg.Add(1)
		go func(d peer.ID) {
			defer wg.Done()
			if err := c.invite(ctx, d, mcfg); err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
				n.log.Info("invite failed", "call", c.info.ID, "device", d, "err", err)
			}
		}(d)
	}
	wg.Wait()
	c.mu.Lock()
	reached := len(c.legs)
	c.mu.Unlock()
	if reached == 0 {
		c.end("unreachable")
		return nil, fmt.Errorf("%w: none of %s's %d device(s) could be reached (%s)", ErrNoDevice, handle, len(devices), errs[0])
	}
	go c.ringTimer()
	return c, nil
}

// invite opens the leg to one device: a stream, a media session and its offer.
func (c *Call) invite(ctx context.Context, d peer.ID, mcfg media.Config) error {
	n := c.n
	ctx, cancel := context.WithTimeout(ctx, callDialTimeout)
	defer cancel()
	if err := n.connect(ctx, d); err != nil {
		return err
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "parley signalling"), d, CallProtocol)
	if err != nil {
		return fmt.Errorf("open call stream to %s: %w", d.ShortString(), err)
	}
	g := &gate{src: c.opts.Source, sink: c.opts.Sink, rec: c.opts.Recorder}
	mcfg.Source, mcfg.Sink = gatedSource{g}, gatedSink{g}
	if c.opts.Recorder != nil {
		mcfg.Recorder = gatedWriter{g}
	}
	sess, err := media.NewSession(mcfg)
	if err != nil {
		s.Reset()
		return err
	}
	l := &leg{device: d, stream: s, session: sess, gate: g}
	sess.OnLocalCandidate(func(cand string) { l.localCandidate(c.info.ID, cand) })
	offer, err := sess.CreateOffer(ctx)
	if err != nil {
		l.close()
		return err
	}
	c.mu.Lock()
	if c.ended || c.winner != nil {
		c.mu.Unlock()
		l.close()
		return errors.New("call already decided")
	}
	c.legs[d] = l
	c.mu.Unlock()
	if err := l.sendFirst(callFrame{Type: sigInvite, Call: c.info.ID, From: n.id.Handle(), Record: n.id.Record(), SDP: offer}); err != nil {
		c.dropLeg(l, "")
		return fmt.Errorf("send invite to %s: %w", d.ShortString(), err)
	}
	n.wg.Add(1)
	go c.readOutgoing(l)
	return nil
}

func (c *Call) ringTimer() {
	t := time.NewTimer(c.opts.RingTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		c.mu.Lock()
		answered := c.winner != nil
		legs := c.legList()
		c.mu.Unlock()
		if !answered {
			for _, l := range legs {
				l.send(callFrame{Type: sigCancel, Call: c.info.ID, Reason: "timeout"})
			}
			c.end("no answer")
		}
	case <-c.done:
	case <-c.n.ctx.Done():
	}
}

func (c *Call) legList() []*leg {
	out := make([]*leg, 0, len(c.legs))
	for _, l := range c.legs {
		out = append(out, l)
	}
	return out
}

// dropLeg forgets a leg that ended; when no leg is left before an answer,
// the call ends with the last reason heard.
func (c *Call) dropLeg(l *leg, reason string) {
	c.mu.Lock()
	delete(c.legs, l.device)
	left := len(c.legs)
	answered := c.winner != nil
	isWinner := c.winner == l
	c.mu.Unlock()
	l.close()
	switch {
	case isWinner:
		c.end(reason)
	case !answered && left == 0:
		if reason == "" {
			reason = "unreachable"
		}
		c.end(reason)
	}
}

// readOutgoing serves the caller's side of one leg.
func (c *Call) readOutgoing(l *leg) {
	defer c.n.wg.Done()
	reason := "connection lost"
	defer func() { c.dropLeg(l, reason) }()
	for {
		f, err := readCallFrame(l.stream, c.info.ID)
		if errors.Is(err, ErrBadFrame) {
			l.stream.Reset()
			reason = "bad signalling from callee: " + err.Error()
			return
		}
		if err != nil {
			if c.isWinner(l) && !c.isEnded() {
				// Signalling lost mid-call (a relayed circuit hit its limit):
				// media goes on; the call ends when media does or on hangup.
				c.n.log.Info("call signalling lost; media continues", "call", c.info.ID, "err", err)
				select {
				case <-l.session.Done():
				case <-c.done:
				}
			}
			return
		}
		switch f.Type {
		case sigRinging:
			c.mu.Lock()
			if !l.rang {
				l.rang = true
				c.info.DevicesRang++
			}
			c.mu.Unlock()
			c.setState(CallRinging)
			c.n.publishCall(c)
		case sigAccept:
			if !c.takeAnswer(l) {
				l.send(callFrame{Type: sigCancel, Call: c.info.ID, Reason: errAnsweredElse})
				reason = ""
				return
			}
			if err := l.session.SetAnswer(f.SDP); err != nil {
				l.send(callFrame{Type: sigHangup, Call: c.info.ID, Reason: "bad answer"})
				reason = "bad answer from callee: " + err.Error()
				return
			}
			c.n.wg.Add(1)
			go c.watchMedia(l)
		case sigCandidate:
			if err := l.session.AddRemoteCandidate(f.Candidate); err != nil {
				l.send(callFrame{Type: sigHangup, Call: c.info.ID, Reason: "bad candidate"})
				reason = "bad candidate from callee: " + err.Error()
				return
			}
		case sigRestartAnswer:
			if err := l.session.SetAnswer(f.SDP); err != nil {
				reason = "bad ICE restart answer: " + err.Error()
				return
			}
		case sigReject:
			reason = f.Reason
			if reason == "" {
				reason = "declined"
			}
			if reason == rejectGlare {
				c.lostGlare()
			}
			return
		case sigHangup:
			reason = hungUpReason(f)
			return
		default:
			reason = fmt.Sprintf("unexpected %s from callee", f.Type)
			return
		}
	}
}

func (c *Call) isWinner(l *leg) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.winner == l
}

func (c *Call) isEnded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// takeAnswer makes l the winner if no other leg answered first, and tells
// every other device that the call was answered elsewhere.
func (c *Call) takeAnswer(l *leg) bool {
	c.mu.Lock()
	if c.winner != nil || c.ended {
		c.mu.Unlock()
		return false
	}
	c.winner = l
	c.info.Device = l.device.String()
	c.info.State = CallConnecting
	var losers []*leg
	for d, o := range c.legs {
		if o != l {
			losers = append(losers, o)
			delete(c.legs, d)
		}
	}
	c.mu.Unlock()
	n := c.n
	n.calls.mu.Lock()
	if n.calls.active == nil {
		n.calls.active = c
	}
	n.calls.mu.Unlock()
	l.gate.decide(true)
	for _, o := range losers {
		o.send(callFrame{Type: sigCancel, Call: c.info.ID, Reason: errAnsweredElse})
		o.close()
	}
	n.publishCall(c)
	return true
}

// watchMedia follows the winning leg's media: first audio makes the call
// active; a path that stays down is restarted (offerer side); a closed
// session ends the call.
func (c *Call) watchMedia(l *leg) {
	defer c.n.wg.Done()
	s := l.session
	states := make(chan media.State, 16)
	s.OnState(func(st media.State) {
		select {
		case states <- st:
		default:
		}
	})
	outgoing := c.info.Direction == "outgoing"
	// restart fires restartAfter into a disconnection. stuck fires when the
	// media has not (re)connected in time: setupFallback after the answer,
	// restartRetry after an ICE restart. Either way the caller restarts ICE,
	// which offers every relay tier the policy allows.
	var restart, stuck <-chan time.Time
	var timer, stuckTimer *time.Timer
	arm := func(d time.Duration) {
		if stuckTimer != nil {
			stuckTimer.Stop()
		}
		stuckTimer = time.NewTimer(d)
		stuck = stuckTimer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if stuckTimer != nil {
			stuckTimer.Stop()
		}
	}()
	if outgoing {
		arm(setupFallback)
	}
	failed := 0 // restarts since media last connected
	doRestart := func() {
		if failed++; failed > maxFailedRestarts {
			l.send(callFrame{Type: sigHangup, Call: c.info.ID, Reason: "no media path"})
			c.end("no media path")
			return
		}
		c.restartICE(l)
		arm(restartRetry)
	}
	ping := time.NewTicker(callPingInterval)
	defer ping.Stop()
	first := s.FirstAudio()
	for {
		select {
		case <-ping.C:
			if err := l.send(callFrame{Type: sigPing, Call: c.info.ID}); err != nil {
				c.n.log.Debug("call ping", "call", c.info.ID, "err", err)
			}
		case <-first:
			first = nil
			c.mu.Lock()
			c.info.SetupMS = float64(c.n.cfg.Now().Sub(c.started).Microseconds()) / 1000
			c.mu.Unlock()
			c.setState(CallActive)
		case st := <-states:
			switch st {
			case media.StateDisconnected, media.StateFailed:
				if timer == nil && outgoing {
					timer = time.NewTimer(restartAfter)
					restart = timer.C
				}
			case media.StateConnected:
				failed = 0
				if timer != nil {
					timer.Stop()
					timer, restart = nil, nil
				}
				if stuckTimer != nil {
					stuckTimer.Stop()
					stuckTimer, stuck = nil, nil
				}
			}
		case <-restart:
			timer, restart = nil, nil
			doRestart()
		case <-stuck:
			stuckTimer, stuck = nil, nil
			doRestart()
		case <-s.Done():
			// A hangup closes the peer's media and sends a hangup frame;
			// the frame may come second. Give it a moment to say why.
			select {
			case <-c.done:
			case <-time.After(hangupGrace):
				c.end("media closed")
			}
			return
		case <-c.done:
			return
		}
	}
}

// refreshICE gives the session the ICE servers the call's policy allows
// now: a relay that died since the call began is left out.
func (c *Call) refreshICE(ctx context.Context, s *media.Session) {
	mcfg, ice, err := c.n.callMedia(ctx, c.opts.Path, c.opts.Profile, true)
	if err != nil {
		c.n.log.Info("ICE servers not refreshed", "call", c.info.ID, "err", err)
		return
	}
	if err := s.SetICEServers(mcfg.ICEServers); err != nil {
		c.n.log.Info("ICE servers not refreshed", "call", c.info.ID, "err", err)
		return
	}
	c.mu.Lock()
	c.ice = ice
	c.mu.Unlock()
}

func (c *Call) restartICE(l *leg) {
	ctx, cancel := context.WithTimeout(c.n.ctx, 5*time.Second)
	defer cancel()
	c.refreshICE(ctx, l.session)
	offer, err := l.session.RestartICE(ctx)
	if err != nil {
		c.n.log.Warn("ICE restart", "call", c.info.ID, "err", err)
		return
	}
	c.mu.Lock()
	c.restarts++
	c.mu.Unlock()
	c.n.log.Info("restarting ICE", "call", c.info.ID)
	if err := l.send(callFrame{Type: sigRestart, Call: c.info.ID, SDP: offer}); err != nil {
		c.n.log.Warn("send ICE restart", "call", c.info.ID, "err", err)
	}
}

// Hangup ends the call from this side, telling the peer.
func (c *Call) Hangup() { c.hangup("hung up") }

// hangup ends the call from this side, telling the peer, with the reason
// this side shows.
func (c *Call) hangup(reason string) {
	c.mu.Lock()
	legs := c.legList()
	answered := c.winner != nil
	c.mu.Unlock()
	for _, l := range legs {
		if answered {
			l.send(callFrame{Type: sigHangup, Call: c.info.ID})
		} else if c.info.Direction == "outgoing" {
			l.send(callFrame{Type: sigCancel, Call: c.info.ID, Reason: "cancelled"})
		} else {
			l.send(callFrame{Type: sigReject, Call: c.info.ID, Reason: "declined"})
		}
	}
	c.end(reason)
}

// readCallFrame reads the next frame of callID ("" for the invite), past
// any pings.
func readCallFrame(s network.Stream, callID string) (*callFrame, error) {
	for {
		s.SetReadDeadline(time.Now().Add(callIdleTimeout))
		b, err := wire.ReadFrame(s, MaxCallFrame)
		if err != nil {
			return nil, err
		}
		f, err := decodeCallFrame(b)
		if err != nil {
			return nil, err
		}
		if callID != "" && f.Call != callID {
			return nil, fmt.Errorf("%w: frame for call %s on the stream of %s", ErrBadFrame, f.Call, callID)
		}
		if f.Type == sigPing && callID != "" {
			continue
		}
		return f, nil
	}
}

// handleCall serves an incoming call stream.
func (n *Node) handleCall(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !n.callLimit.acquire(remote) {
		s.Reset()
		return
	}
	defer n.callLimit.release(remote)
	f, err := readCallFrame(s, "")
	if err == nil && f.Type != sigInvite {
		err = fmt.Errorf("%w: expected invite, got %s", ErrBadFrame, f.Type)
	}
	if err != nil {
		n.badInput.Warn("call stream reset", "peer", remote, "err", err)
		s.Reset()
		return
	}
	l := &leg{device: remote, stream: s, offer: f.SDP, sendable: true}
	caller, err := n.checkHello(f.Record, remote)
	if err == nil && caller.Handle != f.From {
		err = fmt.Errorf("invite from %s carries the record of %s", f.From, caller.Handle)
	}
	if err == nil {
		_, err = media.FingerprintFromSDP(f.SDP)
	}
	if err != nil {
		n.log.Warn("invite refused", "peer", remote, "err", err)
		l.send(callFrame{Type: sigReject, Call: f.Call, Reason: "bad invite"})
		s.Close()
		return
	}
	c := &Call{n: n, legs: map[peer.ID]*leg{remote: l}, done: make(chan struct{}), started: n.cfg.Now(),
		info: CallInfo{ID: f.Call, Peer: caller.Handle, Direction: "incoming", State: CallRinging, Device: remote.String(), StartedMS: n.cfg.Now().UnixMilli()}}
	if reason := n.admitIncoming(c); reason != "" {
		l.send(callFrame{Type: sigReject, Call: f.Call, Reason: reason})
		s.Close()
		return
	}
	if err := l.send(callFrame{Type: sigRinging, Call: f.Call}); err != nil {
		c.end("connection lost")
		return
	}
	n.publishCall(c)
	if n.cfg.AutoAnswer != nil {
		go func() {
			opts, err := n.cfg.AutoAnswer(c.Info())
			if err != nil {
				n.log.Warn("auto-answer", "call", c.info.ID, "err", err)
				c.Hangup()
				return
			}
			if err := c.Answer(n.ctx, opts); err != nil {
				n.log.Warn("auto-answer", "call", c.info.ID, "err", err)
			}
		}()
	}
	c.readIncoming(l)
}

// pendingCall returns the call with peer in direction that nobody has
// answered yet and that has not ended, or nil. The caller holds n.calls.mu.
func (n *Node) pendingCall(peer, direction string) *Call {
	var found *Call
	for _, o := range n.calls.byID {
		o.mu.Lock()
		if o.info.Direction == direction && o.info.Peer == peer && o.winner == nil && !o.ended {
			found = o
		}
		o.mu.Unlock()
	}
	return found
}

// hungUpReason is what this side shows for the peer's hangup frame.
func hungUpReason(f *callFrame) string {
	if f.Reason != "" {
		return "remote hung up: " + f.Reason
	}
	return "remote hung up"
}

// admitIncoming registers a ringing call, or says why it is refused: busy,
// or glare (both sides called each other at once: the call with the lower ID
// survives on both sides, and the device whose own call died answers the
// survivor, since it wanted to talk anyway).
func (n *Node) admitIncoming(c *Call) (reject string) {
	n.calls.mu.Lock()
	if n.calls.active != nil {
		n.calls.mu.Unlock()
		return "busy"
	}
	mine := n.pendingCall(c.info.Peer, "outgoing")
	if mine != nil && mine.info.ID < c.info.ID {
		n.calls.mu.Unlock()
		return rejectGlare
	}
	n.calls.byID[c.info.ID] = c
	if g, ok := n.calls.glare[c.info.Peer]; ok {
		delete(n.calls.glare, c.info.Peer)
		if n.cfg.Now().Before(g.until) && mine == nil {
			// Our call to this peer lost a glare before this one came.
			n.calls.mu.Unlock()
			go c.Answer(n.ctx, g.opts)
			return ""
		}
		g.opts.Close()
	}
	n.calls.mu.Unlock()
	if mine != nil {
		mine.mu.Lock()
		opts := mine.opts
		mine.gaveWay = true
		mine.mu.Unlock()
		mine.Hangup()
		go c.Answer(n.ctx, opts)
	}
	return ""
}

// Answer takes an incoming ringing call with the given audio ends.
func (c *Call) Answer(ctx context.Context, opts CallOptions) error {
	n := c.n
	c.mu.Lock()
	if c.info.Direction != "incoming" || c.info.State != CallRinging || c.ended {
		c.mu.Unlock()
		opts.Close()
		return fmt.Errorf("%w: call %s is %s", ErrCallState, c.info.ID, c.info.State)
	}
	l := c.legs[peer.ID(mustDecode(c.info.Device))]
	c.mu.Unlock()
	n.calls.mu.Lock()
	if n.calls.active != nil {
		n.calls.mu.Unlock()
		opts.Close()
		return ErrBusy
	}
	n.calls.active = c
	n.calls.mu.Unlock()

	c.opts = opts
	mcfg, ice, err := n.callMedia(ctx, opts.Path, opts.Profile, false)
	if err != nil {
		l.send(callFrame{Type: sigReject, Call: c.info.ID, Reason: "no path"})
		c.end("no path: " + err.Error())
		return err
	}
	c.mu.Lock()
	c.ice = ice
	c.mu.Unlock()
	mcfg.Source, mcfg.Sink, mcfg.Recorder = opts.Source, opts.Sink, opts.Recorder
	sess, err := media.NewSession(mcfg)
	if err != nil {
		c.end("media error: " + err.Error())
		return err
	}
	c.mu.Lock()
	l.session = sess
	l.sendable = false
	early := l.early
	l.early = nil
	c.winner = l
	c.info.State = CallConnecting
	c.mu.Unlock()
	sess.OnLocalCandidate(func(cand string) { l.localCandidate(c.info.ID, cand) })
	answer, err := sess.Answer(ctx, l.offer)
	if err != nil {
		l.send(callFrame{Type: sigReject, Call: c.info.ID, Reason: "bad offer"})
		c.end("bad offer: " + err.Error())
		return err
	}
	for _, cand := range early {
		if err := sess.AddRemoteCandidate(cand); err != nil {
			n.log.Info("early candidate refused", "call", c.info.ID, "err", err)
		}
	}
	if err := l.sendFirst(callFrame{Type: sigAccept, Call: c.info.ID, SDP: answer}); err != nil {
		c.end("connection lost")
		return err
	}
	n.publishCall(c)
	n.wg.Add(1)
	go c.watchMedia(l)
	return nil
}

// Reject declines an incoming ringing call.
func (c *Call) Reject() error {
	c.mu.Lock()
	ok := c.info.Direction == "incoming" && c.info.State == CallRinging && !c.ended
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: only a ringing incoming call can be rejected", ErrCallState)
	}
	c.Hangup()
	return nil
}

// readIncoming serves the callee's side of the call's stream.
func (c *Call) readIncoming(l *leg) {
	reason := "connection lost"
	defer func() { c.end(reason) }()
	for {
		f, err := readCallFrame(l.stream, c.info.ID)
		if errors.Is(err, ErrBadFrame) {
			l.stream.Reset()
			reason = "bad signalling from caller: " + err.Error()
			return
		}
		if err != nil {
			if c.isEnded() {
				return
			}
			c.mu.Lock()
			s := l.session
			c.mu.Unlock()
			if s != nil {
				c.n.log.Info("call signalling lost; media continues", "call", c.info.ID, "err", err)
				select {
				case <-s.Done():
				case <-c.done:
				}
			}
			return
		}
		c.mu.Lock()
		s := l.session
		if s == nil && f.Type == sigCandidate {
			if len(l.early) < 64 {
				l.early = append(l.early, f.Candidate)
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Unlock()
		switch f.Type {
		case sigCandidate:
			if err := s.AddRemoteCandidate(f.Candidate); err != nil {
				l.send(callFrame{Type: sigHangup, Call: c.info.ID, Reason: "bad candidate"})
				reason = "bad candidate from caller: " + err.Error()
				return
			}
		case sigRestart:
			if s == nil {
				reason = "ICE restart before answer"
				return
			}
			// Each step gets its own deadline: refreshing the ICE servers
			// may wait on relays, which must not cost the answer.
			rctx, cancel := context.WithTimeout(c.n.ctx, restartFetchTimeout)
			c.refreshICE(rctx, s)
			cancel()
			actx, cancel := context.WithTimeout(c.n.ctx, 5*time.Second)
			ans, err := s.Answer(actx, f.SDP)
			cancel()
			if err != nil {
				reason = "bad ICE restart offer: " + err.Error()
				return
			}
			c.mu.Lock()
			c.restarts++
			c.mu.Unlock()
			l.send(callFrame{Type: sigRestartAnswer, Call: c.info.ID, SDP: ans})
		case sigCancel:
			reason = f.Reason
			if reason == "" {
				reason = "cancelled"
			}
			if reason == errAnsweredElse {
				c.mu.Lock()
				c.info.AnsweredElsewhere = true
				c.mu.Unlock()
			}
			return
		case sigHangup:
			reason = hungUpReason(f)
			return
		default:
			reason = fmt.Sprintf("unexpected %s from caller", f.Type)
			return
		}
	}
}

func mustDecode(s string) peer.ID {
	id, _ := peer.Decode(s)
	return id
}
