// Package guestcall is the caller's side of a guest's call: a person on a
// web page with no parley (browser.GuestServer's /call/HANDLE) rings every
// device of a handle over libp2p. A supernode runs it (`parley supernode
// --web`) and so does a public daemon (`parley daemon --web`): it needs a
// libp2p host, a way to resolve a handle and to find a device.
package guestcall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/media"
)

// The caller's side of /parley/call/2.0.0 for a guest (node/callproto.go
// describes the protocol; node/guestcall.go the callee's side): the
// server (a supernode or a public daemon) resolves the handle, opens one stream to every device, and
// sends each an invite marked guest, with no handle record, carrying the
// offer of one peer connection in the guest's page. The first device to
// accept wins and gets the page's media; the others are told "answered
// elsewhere". The server answers pings, relays candidates both ways, and
// ends the call when the page goes, the device hangs up, or no device
// answers within guestRingTimeout.
//
// As the caller it restarts ICE, as a node's call does: when the page's
// peer connection is disconnected or failed for guestRestartAfter (the
// page reads as disconnected once it hears nothing for
// browser.GuestConfig.StallTimeout), it asks the page for an ICE-restart
// offer and sends it as restart; the device's restart-answer goes back to
// the page. A restart not connected within guestRestartRetry is followed
// by another; after guestMaxFailedRestarts in a row the call ends. So a
// guest's call survives the relay under it dying (the device answers with
// its other relays). It does not resume a broken stream: a guest's call
// ends with its signalling.

// Limits of a guest's call.
const (
	guestCallProtocol = "/parley/call/2.0.0"
	maxGuestFrame     = 32 << 10 // node.MaxCallFrame
	maxGuestSDP       = 24 << 10
	maxGuestCandidate = 1 << 10
	guestRingTimeout  = 60 * time.Second
	guestDialTimeout  = 10 * time.Second
	guestLinkIdle     = 10 * time.Minute
	maxGuestDevices   = 8

	// node.CallTimings' Restart, RestartRetry and MaxFailedRestarts.
	guestRestartAfter      = 250 * time.Millisecond
	guestRestartRetry      = 3 * time.Second
	guestMaxFailedRestarts = 5
	guestRestartOfferWait  = 5 * time.Second
)

// errGuestFrame is a frame from a device that does not parse or breaks a limit.
var errGuestFrame = errors.New("bad call frame")

// guestFrame is node's callFrame, the fields a guest's call uses.
type guestFrame struct {
	Type      string `json:"t"`
	Call      string `json:"call"`
	Guest     bool   `json:"guest,omitempty"`
	SDP       string `json:"sdp,omitempty"`
	Candidate string `json:"cand,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Seq       uint64 `json:"seq,omitempty"`
	Ack       uint64 `json:"ack,omitempty"`
	Restart   uint32 `json:"restart,omitempty"`
}

// decodeGuestFrame parses one frame from a callee device.
func decodeGuestFrame(b []byte) (*guestFrame, error) {
	if len(b) > maxGuestFrame {
		return nil, fmt.Errorf("%w: %d bytes", errGuestFrame, len(b))
	}
	var f guestFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", errGuestFrame, err)
	}
	if len(f.SDP) > maxGuestSDP || len(f.Candidate) > maxGuestCandidate || len(f.Reason) > 120 || len(f.Call) > 64 ||
		!utf8.ValidString(f.SDP) || !utf8.ValidString(f.Candidate) || !utf8.ValidString(f.Reason) {
		return nil, fmt.Errorf("%w: field too long or not UTF-8", errGuestFrame)
	}
	switch f.Type {
	case "accept":
		if f.SDP == "" {
			return nil, fmt.Errorf("%w: accept without SDP", errGuestFrame)
		}
	case "restart-answer":
		if f.SDP == "" || f.Restart == 0 {
			return nil, fmt.Errorf("%w: restart-answer without SDP or restart number", errGuestFrame)
		}
	case "ringing", "reject", "hangup", "candidate", "ping", "pong", "resumed":
	default:
		return nil, fmt.Errorf("%w: %q from a callee", errGuestFrame, f.Type)
	}
	return &f, nil
}

// Caller rings handles for the guest endpoint: a browser.GuestCaller.
type Caller struct {
	// Host opens the call streams.
	Host host.Host
	// Resolve is the verified record of a handle.
	Resolve func(ctx context.Context, handle string) (*discovery.HandleRecord, error)
	// FindPeer finds the addresses of a device the host is not connected to.
	FindPeer func(ctx context.Context, id peer.ID) (peer.AddrInfo, error)
	// Logger receives the calls' logs; nil means slog.Default().
	Logger *slog.Logger
}

var _ browser.GuestCaller = Caller{}

func (g Caller) logger() *slog.Logger {
	if g.Logger == nil {
		return slog.Default()
	}
	return g.Logger
}

// pageLeg is what a call does with the page's peer connection for one
// device once it is set up: a *browser.Session (a unit test's fake page
// stands in for the browser to drive the call on a fake clock).
type pageLeg interface {
	SetAnswer(sdp string) error
	AddRemoteCandidate(cand string) error
	RestartICE(ctx context.Context) (string, error)
	Close() error
}

// glink is the stream to one device and the page's peer connection for it.
type glink struct {
	device  peer.ID
	stream  network.Stream
	session pageLeg
	out     chan guestFrame
	quit    chan struct{}
	once    sync.Once
	sent    uint64 // seq of our last sequenced frame (the loop's)
	recv    uint64 // highest seq received (the loop's)
	invited bool
	early   []string // local candidates before the invite went out
	// end closes the stream once its writer and reader are done (set by
	// start, before either runs).
	end *wire.Ending
}

func (l *glink) close() { l.once.Do(func() { close(l.quit) }) }

// guestLinger bounds how long a stream whose side we closed waits for
// the device to close its own (its last frames in flight) before it is
// reset.
const guestLinger = 3 * time.Second

// guestCall is one guest's call; run owns its state.
type guestCall struct {
	id      string
	gc      browser.GuestCall
	clk     clock.Clock
	events  chan any
	done    chan struct{}
	wg      sync.WaitGroup
	legs    map[peer.ID]*glink
	pending int // legs still being set up
	winner  *glink
	rang    int
	ctx     context.Context // the page's, ended when the call is over

	// ICE restarts of the winner's leg (only the run loop touches these).
	// restartTimer, when armed, makes the next restart due: the first
	// (guestRestartAfter after media went) or the next (guestRestartRetry
	// after one that did not connect). restartGen names its arming, so an
	// event from a timer since stopped (it may be queued already) is
	// ignored.
	restartTimer clock.Timer
	restartGen   uint64
	restartN     uint32 // the restart offered last: older answers are stale
	restarting   bool   // a restart offer is being made or awaits its answer
	failed       int    // restarts since media last connected
	restarts     int
}

func (c *guestCall) armRestart(d time.Duration) {
	c.disarmRestart()
	c.restartGen++
	gen := c.restartGen
	c.restartTimer = c.clk.AfterFunc(d, func() { c.post(evGuestRestart{gen: gen}) })
}

func (c *guestCall) disarmRestart() {
	if c.restartTimer != nil {
		c.restartTimer.Stop()
		c.restartTimer = nil
	}
}

type (
	evGuestLeg struct {
		l     *glink
		offer string
		err   error
	}
	evGuestFrame struct {
		l *glink
		f *guestFrame
	}
	evGuestDown struct {
		l   *glink
		err error
	}
	evGuestCand struct {
		l    *glink
		cand string
	}
	evGuestState struct {
		l  *glink
		st media.State
	}
	evGuestRing    struct{}
	evGuestRestart struct{ gen uint64 } // a restart is due
	evGuestOffer   struct {
		l   *glink
		n   uint32
		sdp string
		err error
	}
)

// CallGuest rings every device of gc.Handle and runs the call to its end.
func (g Caller) CallGuest(ctx context.Context, gc browser.GuestCall) error {
	if err := discovery.ValidHandle(gc.Handle); err != nil {
		return fmt.Errorf("no such handle %q", gc.Handle)
	}
	rctx, cancel := context.WithTimeout(ctx, guestDialTimeout)
	rec, err := g.Resolve(rctx, gc.Handle)
	cancel()
	if err != nil {
		g.logger().Info("guest call: resolve", "handle", gc.Handle, "err", err)
		return fmt.Errorf("no such handle %q here", gc.Handle)
	}
	devices := rec.DeviceIDs()
	if len(devices) > maxGuestDevices {
		devices = devices[:maxGuestDevices]
	}
	var idb [16]byte
	rand.Read(idb[:])
	c := &guestCall{id: hex.EncodeToString(idb[:]), gc: gc, clk: clock.Real{}, events: make(chan any, 256),
		done: make(chan struct{}), legs: map[peer.ID]*glink{}, pending: len(devices)}
	defer c.wg.Wait()
	defer close(c.done)
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	c.ctx = dctx
	for _, d := range devices {
		c.spawn(func() {
			e := g.dial(dctx, c, d)
			select {
			case c.events <- e:
			case <-c.done:
				if e.l != nil { // too late: the call is over
					_ = e.l.session.Close() // a page's leg: nothing is stored
					e.l.stream.Reset()
				}
			}
		})
	}
	err = c.run(ctx)
	g.logger().Debug("guest call over", "call", c.id, "handle", gc.Handle, "ice_restarts", c.restarts, "err", err)
	return err
}

func (c *guestCall) spawn(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

func (c *guestCall) post(e any) {
	select {
	case c.events <- e:
	case <-c.done:
	}
}

// dial opens the stream and the page's peer connection for one device.
func (g Caller) dial(ctx context.Context, c *guestCall, d peer.ID) evGuestLeg {
	ctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "parley guest call"), guestDialTimeout)
	defer cancel()
	h := g.Host
	if d == h.ID() {
		// This device is the server: it cannot open a stream to itself.
		return evGuestLeg{err: fmt.Errorf("device %s is this server", d.ShortString())}
	}
	if cs := h.Network().Connectedness(d); cs != network.Connected && cs != network.Limited {
		found, err := g.FindPeer(ctx, d)
		if err == nil {
			err = h.Connect(ctx, found)
		}
		if err != nil {
			return evGuestLeg{err: fmt.Errorf("reach device %s: %w", d.ShortString(), err)}
		}
	}
	s, err := h.NewStream(ctx, d, guestCallProtocol)
	if err != nil {
		return evGuestLeg{err: fmt.Errorf("open call stream to %s: %w", d.ShortString(), err)}
	}
	sess, err := c.gc.Page.NewSession(c.gc.Session)
	if err != nil {
		s.Reset()
		return evGuestLeg{err: err}
	}
	l := &glink{device: d, stream: s, session: sess, out: make(chan guestFrame, 256), quit: make(chan struct{})}
	sess.OnLocalCandidate(func(cand string) { c.post(evGuestCand{l: l, cand: cand}) })
	sess.OnState(func(st media.State) { c.post(evGuestState{l: l, st: st}) })
	offer, err := sess.CreateOffer(ctx)
	if err != nil {
		_ = sess.Close() // a page's leg: nothing is stored
		s.Reset()
		return evGuestLeg{err: fmt.Errorf("the page's offer: %w", err)}
	}
	return evGuestLeg{l: l, offer: offer}
}

// run is the call's loop: every transition is here.
func (c *guestCall) run(ctx context.Context) error {
	ring := c.clk.AfterFunc(guestRingTimeout, func() { c.post(evGuestRing{}) })
	defer ring.Stop()
	defer c.disarmRestart()
	var lastErr error
	for {
		if c.winner == nil && c.pending == 0 && len(c.legs) == 0 {
			if lastErr == nil {
				lastErr = errors.New("no device answered")
			}
			return lastErr
		}
		var ev any
		select {
		case <-ctx.Done():
			c.endAll("cancelled", "hangup")
			return nil
		case ev = <-c.events:
		}
		switch e := ev.(type) {
		case evGuestLeg:
			c.pending--
			if e.err != nil {
				lastErr = e.err
				continue
			}
			if c.winner != nil {
				_ = e.l.session.Close() // a page's leg: nothing is stored
				e.l.stream.Reset()
				continue
			}
			c.start(e.l, e.offer)
		case evGuestCand:
			if !e.l.invited {
				e.l.early = append(e.l.early, e.cand)
			} else if c.legs[e.l.device] == e.l {
				c.send(e.l, guestFrame{Type: "candidate", Candidate: e.cand})
			}
		case evGuestState:
			if e.l != c.winner {
				continue
			}
			if e.st == media.StateClosed {
				c.endAll("", "hangup") // the page hung up
				return nil
			}
			c.mediaState(e.st)
		case evGuestRestart:
			if end, err := c.restartDueNow(e); end {
				return err
			}
		case evGuestOffer:
			c.restartOffer(e)
		case evGuestDown:
			if c.legs[e.l.device] != e.l {
				continue
			}
			c.drop(e.l)
			if e.l == c.winner {
				c.endAll("", "hangup")
				return errors.New("signalling to the device was lost")
			}
			lastErr = fmt.Errorf("device %s: %w", e.l.device.ShortString(), e.err)
		case evGuestFrame:
			if end, err := c.frame(e.l, e.f); end {
				return err
			}
		case evGuestRing:
			if c.winner == nil {
				c.endAll("timeout", "cancel")
				return errors.New("no answer")
			}
		}
	}
}

// frame applies one frame from a device; end says the call is over.
func (c *guestCall) frame(l *glink, f *guestFrame) (end bool, err error) {
	if c.legs[l.device] != l {
		return false, nil
	}
	if f.Seq > 0 {
		if f.Seq <= l.recv {
			return false, nil
		}
		l.recv = f.Seq
	}
	switch f.Type {
	case "ping":
		c.sendRaw(l, guestFrame{Type: "pong"})
	case "ringing":
		c.rang++
		c.gc.Status("ringing", fmt.Sprintf("%d device(s)", c.rang))
	case "accept":
		if c.winner != nil {
			c.send(l, guestFrame{Type: "cancel", Reason: "answered elsewhere"})
			c.drop(l)
			return false, nil
		}
		if err := l.session.SetAnswer(f.SDP); err != nil {
			c.send(l, guestFrame{Type: "hangup", Reason: "bad answer"})
			c.drop(l)
			return false, nil
		}
		c.winner = l
		for _, o := range c.legs {
			if o != l {
				c.send(o, guestFrame{Type: "cancel", Reason: "answered elsewhere"})
				c.drop(o)
			}
		}
		c.gc.Status("answered", "")
	case "candidate":
		if err := l.session.AddRemoteCandidate(f.Candidate); err != nil {
			c.send(l, guestFrame{Type: "hangup", Reason: "bad candidate"})
			c.drop(l)
			if l == c.winner {
				c.endAll("", "")
				return true, errors.New("the device sent a bad candidate")
			}
		}
	case "reject":
		c.drop(l)
		if f.Reason == "" {
			f.Reason = "declined"
		}
		if c.winner == nil && c.pending == 0 && len(c.legs) == 0 {
			return true, fmt.Errorf("%s", f.Reason)
		}
	case "hangup":
		c.drop(l)
		if l == c.winner {
			c.endAll("", "")
			return true, nil
		}
	case "restart-answer":
		if l != c.winner || f.Restart != c.restartN || !c.restarting {
			return false, nil // stale: a newer restart is under way
		}
		c.restarting = false
		if err := l.session.SetAnswer(f.SDP); err != nil {
			c.endAll("bad restart answer", "hangup")
			return true, fmt.Errorf("the device's ICE restart answer: %w", err)
		}
	}
	return false, nil
}

// mediaState follows the winner's media: a restart is due once it has
// been disconnected or failed for guestRestartAfter, unless one is under
// way; connected ends the restarts.
func (c *guestCall) mediaState(st media.State) {
	switch st {
	case media.StateDisconnected, media.StateFailed:
		if c.restartTimer == nil {
			c.armRestart(guestRestartAfter)
		}
	case media.StateConnected:
		c.failed = 0
		c.disarmRestart()
	}
}

// restartDueNow restarts ICE when a restart timer fires (the first, or
// the next after one that did not connect), or ends the call after
// guestMaxFailedRestarts in a row; end says the call is over.
func (c *guestCall) restartDueNow(e evGuestRestart) (end bool, err error) {
	if c.restartTimer == nil || e.gen != c.restartGen {
		return false, nil // stopped or replaced after it fired
	}
	c.restartTimer = nil
	if c.winner == nil {
		return false, nil
	}
	if c.failed++; c.failed > guestMaxFailedRestarts {
		c.endAll("no media path", "hangup")
		return true, errors.New("the media path failed")
	}
	c.armRestart(guestRestartRetry)
	c.startRestart(c.winner)
	return false, nil
}

// restartOffer sends the page's restart offer to the device, unless a
// newer restart replaced it.
func (c *guestCall) restartOffer(e evGuestOffer) {
	if e.l != c.winner || e.n != c.restartN {
		return
	}
	if e.err != nil {
		c.restarting = false
		c.gc.Status("notice", "reconnecting failed: "+e.err.Error())
		return // the restart timer tries again
	}
	c.restarts++
	c.send(e.l, guestFrame{Type: "restart", SDP: e.sdp, Restart: e.n})
}

// startRestart asks the page for an ICE-restart offer, off the loop: the
// page answers over its WebSocket. An unanswered restart is replaced (the
// page's new offer supersedes its last).
func (c *guestCall) startRestart(l *glink) {
	c.restartN++
	c.restarting = true
	n := c.restartN
	c.spawn(func() {
		ctx, cancel := context.WithTimeout(c.ctx, guestRestartOfferWait)
		defer cancel()
		sdp, err := l.session.RestartICE(ctx)
		c.post(evGuestOffer{l: l, n: n, sdp: sdp, err: err})
	})
}

// start sends a device its invite and the candidates gathered so far.
func (c *guestCall) start(l *glink, offer string) {
	c.legs[l.device] = l
	l.end = wire.NewEnding(l.stream, guestLinger, c.spawn, nil)
	l.end.StartRead()
	c.spawn(func() { c.writeLoop(l) })
	c.spawn(func() { c.readLoop(l) })
	c.send(l, guestFrame{Type: "invite", Guest: true, SDP: offer})
	l.invited = true
	for _, cand := range l.early {
		c.send(l, guestFrame{Type: "candidate", Candidate: cand})
	}
	l.early = nil
}

// send queues a sequenced frame; sendRaw one without a sequence number.
func (c *guestCall) send(l *glink, f guestFrame) {
	l.sent++
	f.Seq = l.sent
	c.sendRaw(l, f)
}

func (c *guestCall) sendRaw(l *glink, f guestFrame) {
	f.Call, f.Ack = c.id, l.recv
	select {
	case l.out <- f:
	default:
		l.end.Reset() // that far behind: broken
	}
}

// drop forgets a leg: its session closes, its stream closes once what is
// queued is written.
func (c *guestCall) drop(l *glink) {
	if c.legs[l.device] == l {
		delete(c.legs, l.device)
	}
	_ = l.session.Close() // a page's leg: nothing is stored
	l.close()
}

// endAll tells every leg the call is over (frame type typ with reason; ""
// sends nothing) and drops them.
func (c *guestCall) endAll(reason, typ string) {
	for _, l := range c.legs {
		if typ != "" {
			c.send(l, guestFrame{Type: typ, Reason: reason})
		}
		c.drop(l)
	}
}

func (c *guestCall) writeLoop(l *glink) {
	_ = wire.WriteLoop(l.stream, l.out, l.quit, maxGuestFrame, 10*time.Second) // a failed write: the reader learns the rest
	l.end.WriteEnded()
}

func (c *guestCall) readLoop(l *glink) {
	for {
		l.stream.SetReadDeadline(time.Now().Add(guestLinkIdle)) // a closed side's linger resets it sooner
		b, err := wire.ReadFrame(l.stream, maxGuestFrame)
		var f *guestFrame
		if err == nil {
			f, err = decodeGuestFrame(b)
		}
		if err == nil && f.Call != c.id {
			err = fmt.Errorf("%w: frame for another call", errGuestFrame)
		}
		if err != nil {
			if errors.Is(err, errGuestFrame) {
				l.end.Reset()
			}
			l.end.ReadEnded()
			c.post(evGuestDown{l: l, err: err})
			return
		}
		c.post(evGuestFrame{l: l, f: f})
	}
}
