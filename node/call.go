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

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/media"
)

// A call is one state machine owned by one goroutine (callloop.go): the
// signalling links (callsig.go), the media session's callbacks, timers and
// API commands post typed events to it, and every transition happens in
// its loop. This file holds what clients see of a call and the node's
// registry of calls (busy, glare, finding a call by ID).

// Call defaults. CallTimings in Config overrides the timing ones.
const (
	DefaultRingTimeout = 30 * time.Second
	callDialTimeout    = 10 * time.Second
	keepEndedCalls     = 20
)

// Call errors.
var (
	ErrNoSuchCall = errors.New("no such call")
	ErrNoDevice   = errors.New("no device of that handle answered the invite")
	ErrCallState  = errors.New("call is not in a state that allows this")
	ErrBusy       = errors.New("already in a call")
	// ErrAnsweredElsewhere ends a ringing device's call when another
	// device of its account took it.
	ErrAnsweredElsewhere = errors.New("answered elsewhere")
)

// Call states as clients see them.
const (
	CallDialing    = "dialing"    // outgoing: invites on their way
	CallRinging    = "ringing"    // a device rings
	CallConnecting = "connecting" // answered; ICE and DTLS under way
	CallActive     = "active"     // audio flows
	CallEnded      = "ended"
)

// Direction says who placed a call.
type Direction string

// Call directions.
const (
	CallOutgoing Direction = "outgoing"
	CallIncoming Direction = "incoming"
)

// End reasons a program may match.
const (
	// ReasonLost: neither media nor signalling was heard from the peer for
	// CallTimings.Lost.
	ReasonLost = "lost"
	// ReasonNoMediaPath: every ICE restart failed.
	ReasonNoMediaPath = "no media path"
)

// CallTimings are the timers of every call's state machine. The zero value
// of each field means the default beside it.
type CallTimings struct {
	// Restart is how long media may stay disconnected before the caller
	// restarts ICE (default 250 ms).
	Restart time.Duration
	// SetupFallback is how long after the answer media may take to
	// connect before the caller restarts ICE with every tier (default 5 s).
	SetupFallback time.Duration
	// RestartRetry is how long an ICE restart may take to connect before
	// the next (default 3 s).
	RestartRetry time.Duration
	// MaxFailedRestarts is how many restarts in a row may fail before the
	// call ends with ReasonNoMediaPath (default 5).
	MaxFailedRestarts int
	// HangupGrace is how long a call whose media closed waits for the
	// peer's hangup frame, to show its reason (default 1 s).
	HangupGrace time.Duration
	// Lost ends a call when neither media nor signalling has been heard
	// from the peer for this long (default 10 s).
	Lost time.Duration
	// Tick is how often a call checks liveness and pings (default 250 ms).
	Tick time.Duration
	// KeepAlive is how often a quiet signalling link is pinged while
	// media flows (default 1 minute): it keeps NAT and relay state alive.
	KeepAlive time.Duration
	// MediaStale is how long without a packet from the peer makes its media
	// count as gone (default 1 s; an Opus sender in DTX still sends every
	// 400 ms). Then the link is pinged every StalePing (default 250 ms),
	// and a link that answers nothing for LinkDead (default 1 s) counts as
	// broken and is re-opened: a relay killed under a QUIC connection says
	// nothing, and the ICE restart that follows must not wait on it.
	MediaStale, StalePing, LinkDead time.Duration
	// LinkIdle is the read deadline of a signalling stream (default 10
	// minutes): a stream that says nothing for that long is closed.
	LinkIdle time.Duration
}

func (t CallTimings) withDefaults() CallTimings {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&t.Restart, 250*time.Millisecond)
	def(&t.SetupFallback, 5*time.Second)
	def(&t.RestartRetry, 3*time.Second)
	def(&t.HangupGrace, time.Second)
	def(&t.Lost, 10*time.Second)
	def(&t.Tick, 250*time.Millisecond)
	def(&t.KeepAlive, time.Minute)
	def(&t.MediaStale, time.Second)
	def(&t.StalePing, 250*time.Millisecond)
	def(&t.LinkDead, time.Second)
	def(&t.LinkIdle, 10*time.Minute)
	if t.MaxFailedRestarts == 0 {
		t.MaxFailedRestarts = 5
	}
	return t
}

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
	// Browser, when set, runs the call's media in that web page's own
	// RTCPeerConnection (browserleg.go); Source, Sink and Recorder are then
	// unused. nil: the media runs here.
	Browser *browser.Page
}

// Close closes what the options own. Its error is what did not close
// cleanly: a recording or a sink file that may miss its end.
func (o CallOptions) Close() error {
	var errs []error
	for _, c := range o.Closers {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// discard closes options no call used. Nothing was written to them, so
// there is nothing to report.
func (o CallOptions) discard() { _ = o.Close() }

// CallInfo is what clients see of a call.
type CallInfo struct {
	ID   string `json:"id"`
	Peer string `json:"peer"` // the other handle ("" for a guest)
	// Guest is set on a guest's call (a person on a web page, no handle):
	// the peer ID of the server whose page it came through, which vouches
	// only for "someone on my page" (SECURITY.md).
	Guest     string    `json:"guest,omitempty"`
	Direction Direction `json:"direction"` // "outgoing" or "incoming"
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"` // why it ended
	Device    string    `json:"device,omitempty"` // the peer's device on the call
	// DevicesRang counts the callee's devices that rang (outgoing calls).
	DevicesRang int `json:"devices_rang,omitempty"`
	// AnsweredElsewhere is set on a device that rang while another device
	// of its account took the call.
	AnsweredElsewhere bool    `json:"answered_elsewhere,omitempty"`
	StartedMS         int64   `json:"started_ms"`
	SetupMS           float64 `json:"setup_ms,omitempty"` // start to first decoded audio
	// Paths are the pairs that carried the media, in order: the first one
	// ICE selected, each move to a better pair and each pair after a
	// restart (at most maxPathSwitches, the latest kept).
	Paths   []PathSwitch `json:"paths,omitempty"`
	EndedMS int64        `json:"ended_ms,omitempty"`
	Stats   *CallStats   `json:"stats,omitempty"`
}

// CallStats is a call's health in units a person reads.
type CallStats struct {
	// Tier is who carries the media: "direct", "supernode" or "cloud", or
	// TierNone while no path carries any (nothing heard for a second and
	// a half).
	Tier       string  `json:"tier"`
	Path       string  `json:"path"`            // "host", "srflx", "prflx" or "relay" (the less direct end)
	PathDetail string  `json:"path_detail"`     // local -> remote, and through which relay
	Relay      string  `json:"relay,omitempty"` // TURN server carrying the call
	RTTMS      float64 `json:"rtt_ms"`
	JitterMS   float64 `json:"jitter_ms"`
	LossPct    float64 `json:"loss_pct"`
	// ConcealedMS is audio made up for packets that were lost or never
	// came (a dead path counts from its first missing second); MissingMS
	// the part of it still missing now.
	ConcealedMS float64 `json:"concealed_ms"`
	MissingMS   float64 `json:"missing_ms"`
	// RecvKbps and SendKbps are the Opus payload bitrates heard and sent.
	RecvKbps float64 `json:"recv_kbps"`
	SendKbps float64 `json:"send_kbps"`
	// MOS is the E-model estimate of what this side heard, concealed and
	// missing audio included.
	MOS         float64 `json:"mos"`
	PacketsIn   uint64  `json:"packets_in"`
	PacketsOut  uint64  `json:"packets_out"`
	ICERestarts int     `json:"ice_restarts"`
	MediaState  string  `json:"media_state"`
	// Signalling is "up" or "down": whether a signalling stream to the
	// peer is open (it is re-opened when it breaks).
	Signalling string `json:"signalling"`
}

// PathSwitch is a pair that started carrying a call's media.
type PathSwitch struct {
	AtMS   float64 `json:"at_ms"` // since the call started
	Tier   string  `json:"tier"`  // "direct", "supernode", "cloud" or "relay"
	Path   string  `json:"path"`  // as CallStats.Path
	Detail string  `json:"detail"`
}

// maxPathSwitches bounds CallInfo.Paths.
const maxPathSwitches = 32

// TierNone is CallStats.Tier while no path carries media.
const TierNone = "none"

func newCallID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Info is a snapshot of the call, with statistics while it has media.
func (c *Call) Info() CallInfo {
	c.mu.Lock()
	info, s, ice, restarts, sigUp, lastPacket := c.info, c.snap.session, c.snap.ice, c.snap.restarts, c.snap.sigUp, c.snap.lastPacket
	c.mu.Unlock()
	if s == nil || info.State == CallEnded {
		return info
	}
	ms := s.Stats()
	st := statsOf(ms)
	st.ICERestarts = restarts
	if ice != nil {
		st.Tier = ice.tierOf(ms.Path)
	}
	if ms.PacketsReceived == 0 || c.clk.Now().Sub(lastPacket) > 1500*time.Millisecond || ms.Path.Local == "" {
		st.Tier = TierNone
	}
	st.Signalling = "down"
	if sigUp {
		st.Signalling = "up"
	}
	info.Stats = &st
	return info
}

// Done is closed when the call has ended.
func (c *Call) Done() <-chan struct{} { return c.done }

// ID is the call's ID.
func (c *Call) ID() string { return c.id }

// MediaStats is the raw statistics of the call's media session.
func (c *Call) MediaStats() (media.Stats, bool) {
	c.mu.Lock()
	s := c.snap.session
	c.mu.Unlock()
	if s == nil {
		return media.Stats{}, false
	}
	return s.Stats(), true
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
		LossPct: s.LossPercent, ConcealedMS: ms(s.Concealed), MissingMS: ms(s.Missing),
		RecvKbps: s.ReceiveBitrate / 1000, SendKbps: s.SendBitrate / 1000, MOS: s.MOS,
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

// Hangup ends the call from this side, telling the peer. It returns once
// the call has ended.
func (c *Call) Hangup() { c.hangup("hung up") }

func (c *Call) hangup(reason string) {
	reply := make(chan error, 1)
	if c.post(evHangup{reason: reason, reply: reply}) {
		select {
		case <-reply:
		case <-c.done:
		}
	}
	<-c.done
}

// Reject declines an incoming ringing call.
func (c *Call) Reject() error {
	reply := make(chan error, 1)
	if !c.post(evHangup{reason: "hung up", rejectOnly: true, reply: reply}) {
		return fmt.Errorf("%w: call %s has ended", ErrCallState, c.id)
	}
	select {
	case err := <-reply:
		if err == nil {
			<-c.done
		}
		return err
	case <-c.done:
		return nil
	}
}

// Answer takes an incoming ringing call with the given audio ends. It
// returns once the answer is on its way to the caller, or why not.
func (c *Call) Answer(ctx context.Context, opts CallOptions) error {
	reply := make(chan error, 1)
	if !c.post(evAnswer{opts: opts, reply: reply}) {
		opts.discard()
		return fmt.Errorf("%w: call %s has ended", ErrCallState, c.id)
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// calls is the node's call registry. mu guards every field; a call's own
// mu may be taken while holding it, never the other way round.
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

// glareWinner says which of two calls between the same two handles, placed
// at once in opposite directions, survives: the lower ID, on both sides.
func glareWinner(a, b string) string { return min(a, b) }

// ActiveCall is the call this device is connecting or talking in, or nil.
func (n *Node) ActiveCall() *Call {
	n.calls.mu.Lock()
	defer n.calls.mu.Unlock()
	return n.calls.active
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
			if c.id == id {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%w %s", ErrNoSuchCall, id)
	}
	var ringing, all []*Call
	for _, c := range n.calls.byID {
		all = append(all, c)
		if info := c.snapshot(); info.Direction == CallIncoming && info.State == CallRinging {
			ringing = append(ringing, c)
		}
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

// pendingCall returns the call with peer in direction that nobody has
// answered yet and that has not ended, or nil. The caller holds n.calls.mu.
func (n *Node) pendingCall(peer string, dir Direction) *Call {
	for _, o := range n.calls.byID {
		info := o.snapshot()
		if info.Direction == dir && info.Peer == peer && (info.State == CallDialing || info.State == CallRinging) {
			return o
		}
	}
	return nil
}

// admitIncoming registers a ringing call, or says why it is refused: busy,
// or glare (both sides called each other at once: the call glareWinner
// picks survives on both sides, and the device whose own call died answers
// the survivor, since it wanted to talk anyway). answerWith are the audio
// ends to answer the call with once it rings (glare), or nil.
func (n *Node) admitIncoming(c *Call) (reject string, answerWith *CallOptions) {
	n.calls.mu.Lock()
	if n.calls.active != nil {
		n.calls.mu.Unlock()
		return "busy", nil
	}
	mine := n.pendingCall(c.info.Peer, CallOutgoing)
	if mine != nil && glareWinner(mine.id, c.id) == mine.id {
		n.calls.mu.Unlock()
		return rejectGlare, nil
	}
	n.calls.byID[c.id] = c
	if g, ok := n.calls.glare[c.info.Peer]; ok {
		delete(n.calls.glare, c.info.Peer)
		if n.cfg.Now().Before(g.until) && mine == nil {
			// Our call to this peer lost a glare before this one came.
			answerWith = &g.opts
		} else {
			g.opts.discard()
		}
	}
	n.calls.mu.Unlock()
	if mine != nil {
		// Our own call gives way: its audio ends answer the peer's.
		if opts, ok := mine.giveWay(); ok {
			answerWith = &opts
		}
	}
	return "", answerWith
}

// answerGlare answers c, the call that won a glare, with the audio ends
// of the device's own call that lost it.
func (n *Node) answerGlare(c *Call, opts CallOptions) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := c.Answer(n.ctx, opts); err != nil {
			n.log.Info("glare: answering the surviving call", "call", c.id, "err", err)
		}
	}()
}

// lostGlare is told by a call that the peer refused it for glare: its
// audio ends answer the peer's call, at once if it rings here already,
// else when it arrives.
func (n *Node) lostGlare(peerHandle string, opts CallOptions) {
	n.calls.mu.Lock()
	ringing := n.pendingCall(peerHandle, CallIncoming)
	if ringing == nil {
		if n.calls.glare == nil {
			n.calls.glare = map[string]glareWait{}
		}
		if old, ok := n.calls.glare[peerHandle]; ok {
			old.opts.discard()
		}
		n.calls.glare[peerHandle] = glareWait{opts: opts, until: n.cfg.Now().Add(glareWindow)}
	}
	n.calls.mu.Unlock()
	if ringing != nil {
		n.answerGlare(ringing, opts)
	}
}

// activate makes c the device's call; false if another is.
func (n *Node) activate(c *Call) bool {
	n.calls.mu.Lock()
	defer n.calls.mu.Unlock()
	if n.calls.active != nil && n.calls.active != c {
		return false
	}
	n.calls.active = c
	return true
}

// callEnded moves c to the ended list and frees the device.
func (n *Node) callEnded(c *Call) {
	n.calls.mu.Lock()
	if n.calls.active == c {
		n.calls.active = nil
	}
	delete(n.calls.byID, c.id)
	n.calls.ended = append(n.calls.ended, c)
	if len(n.calls.ended) > keepEndedCalls {
		n.calls.ended = n.calls.ended[1:]
	}
	n.calls.mu.Unlock()
	n.metrics.callEnded(c.Info())
}

func (n *Node) publishCall(c *Call) {
	info := c.Info()
	n.events.publish(Event{Type: "call", Peer: info.Peer, Call: &info})
}

// iceFor gives a call's media the ICE servers its policy allows now (a
// relay that died since the call began is left out): every tier on a
// restart, the first relay tier that has one otherwise.
func (n *Node) iceFor(ctx context.Context, path, profile string, mode iceMode) (media.Config, *iceSet, error) {
	return n.callMedia(ctx, path, profile, mode)
}

// iceServersOf is what refreshing a session needs of iceFor.
func iceServersOf(cfg media.Config) []webrtc.ICEServer { return cfg.ICEServers }

// mustDecode decodes a peer ID known to be valid (one this node wrote).
func mustDecode(s string) peer.ID {
	id, _ := peer.Decode(s)
	return id
}
