package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/media"
)

// sigLink is one signalling stream of a call leg. A link never blocks its
// caller: frames are queued and written by the link's own goroutine.
type sigLink interface {
	// send queues f; a link whose queue is full is reset (signalling that
	// far behind is broken). It returns no error on purpose: a frame that
	// cannot be queued or written breaks the link, the call learns it
	// through onDown (Call.linkDown), and the frames the peer has not
	// acknowledged are sent again on the link that replaces it (leg.log).
	send(f callFrame)
	// start begins reading: onFrame for each frame in order, then onDown
	// once when the stream ends.
	start(onFrame func(*callFrame), onDown func(error))
	// close writes what is queued, then closes the stream.
	close()
	// reset drops the stream at once; closeConn also closes the connection
	// under it, so a dial that follows makes a new one.
	reset(closeConn bool)
	// limited says whether the stream rides a relay's circuit (limited in
	// time and bytes); relay names that relay ("" when direct).
	limited() bool
	relay() peer.ID
}

// streamLink is a sigLink on a libp2p stream.
type streamLink struct {
	s    network.Stream
	idle time.Duration
	out  chan callFrame
	quit chan struct{} // closed by close: write what is queued, then stop
	once sync.Once
	// spawn runs the link's goroutines under the node's WaitGroup.
	spawn func(func())
	// end closes the stream once its writer and reader are done: the
	// peer's last frame (a reject, a hangup) is read, never reset away.
	end *wire.Ending
}

// linkLinger bounds how long a link whose side is closed waits for the
// peer to close its own (its last frames in flight) before it is reset.
const linkLinger = 5 * time.Second

// maxQueuedFrames bounds a link's send queue.
const maxQueuedFrames = 512

// callStreamsPerIP caps the call streams open at once from one IP address
// (of the connection: a relay's for a relayed one), below the 16 in all:
// identities are free, addresses are not.
const callStreamsPerIP = 4

// firstFrameTimeout bounds how long a new call stream may take to say what
// it is for: a stranger cannot hold a call slot by saying nothing.
const firstFrameTimeout = 10 * time.Second

func newStreamLink(s network.Stream, idle time.Duration, spawn func(func()), registry func(*streamLink)) *streamLink {
	l := &streamLink{s: s, idle: idle, out: make(chan callFrame, maxQueuedFrames), quit: make(chan struct{}), spawn: spawn}
	var ended func()
	if registry != nil {
		registry(l) // registered before its writer runs
		ended = func() { registry(l) }
	}
	l.end = wire.NewEnding(s, linkLinger, spawn, ended)
	spawn(func() {
		_ = wire.WriteLoop(l.s, l.out, l.quit, MaxCallFrame, 10*time.Second) // a failed write: the reader learns the rest
		l.end.WriteEnded()
	})
	return l
}

// newLink is newStreamLink for n: the node closes whatever link is still
// open when it stops, so its Close never waits on one a call left behind.
func (n *Node) newLink(s network.Stream) *streamLink {
	return newStreamLink(s, n.timings.LinkIdle, nodeEnv{n}.spawn, func(l *streamLink) {
		// Called once as the link starts and once as its stream is closed.
		if _, loaded := n.sigLinks.LoadOrStore(l, struct{}{}); loaded {
			n.sigLinks.Delete(l)
		}
	})
}

// closeLinks resets every signalling link still open (at Close, after the
// calls have hung up).
func (n *Node) closeLinks() {
	n.sigLinks.Range(func(k, _ any) bool {
		k.(*streamLink).reset(false)
		n.sigLinks.Delete(k)
		return true
	})
}

func (l *streamLink) send(f callFrame) {
	select {
	case l.out <- f:
	default:
		l.reset(false)
	}
}

func (l *streamLink) start(onFrame func(*callFrame), onDown func(error)) {
	if !l.end.StartRead() {
		l.spawn(func() { onDown(net.ErrClosed) })
		return
	}
	l.spawn(func() {
		for {
			f, err := readCallFrame(l.s, l.idle)
			if err != nil {
				if errors.Is(err, ErrBadFrame) {
					l.end.Reset()
				}
				l.end.ReadEnded()
				onDown(err)
				return
			}
			onFrame(f)
		}
	})
}

func (l *streamLink) close() { l.once.Do(func() { close(l.quit) }) }

func (l *streamLink) limited() bool { return l.s.Conn().Stat().Limited }

func (l *streamLink) relay() peer.ID { return circuitRelay(l.s.Conn().RemoteMultiaddr()) }

func (l *streamLink) reset(closeConn bool) {
	l.once.Do(func() { close(l.quit) })
	l.end.Reset()
	if closeConn {
		l.s.Conn().Close()
	}
}

// readCallFrame reads one frame, waiting at most idle.
func readCallFrame(s network.Stream, idle time.Duration) (*callFrame, error) {
	s.SetReadDeadline(time.Now().Add(idle))
	b, err := wire.ReadFrame(s, MaxCallFrame)
	if err != nil {
		return nil, err
	}
	return decodeCallFrame(b)
}

// startReading starts the reader of the leg's current link, which posts
// to c; a frame for another call is a protocol error that ends the link.
func (l *leg) startReading(c *Call) {
	gen := l.gen
	l.link.start(func(f *callFrame) {
		if f.Call != c.id {
			c.post(evLinkDown{l: l, gen: gen, err: fmt.Errorf("%w: frame for call %s on the stream of %s", ErrBadFrame, f.Call, c.id)})
			return
		}
		c.post(evFrame{l: l, gen: gen, f: f})
	}, func(err error) { c.post(evLinkDown{l: l, gen: gen, err: err}) })
}

// nodeEnv is the node's side of its calls.
type nodeEnv struct{ n *Node }

func (e nodeEnv) logger() *slog.Logger                          { return e.n.log }
func (e nodeEnv) publish(c *Call)                               { e.n.publishCall(c) }
func (e nodeEnv) activate(c *Call) bool                         { return e.n.activate(c) }
func (e nodeEnv) ended(c *Call)                                 { e.n.callEnded(c) }
func (e nodeEnv) lostGlare(peerHandle string, opts CallOptions) { e.n.lostGlare(peerHandle, opts) }

// direct says whether a connection to device that no relay limits is
// open (hole punching made one, or the device became reachable).
func (e nodeEnv) direct(device peer.ID) bool {
	for _, c := range e.n.host.Network().ConnsToPeer(device) {
		if !c.Stat().Limited {
			return true
		}
	}
	return false
}

func (e nodeEnv) spawn(f func()) {
	e.n.wg.Add(1)
	go func() {
		defer e.n.wg.Done()
		f()
	}()
}

func (e nodeEnv) answerSession(ctx context.Context, opts CallOptions) (callSession, *iceSet, error) {
	mcfg, ice, err := e.n.iceFor(ctx, opts.Path, opts.Profile, iceFirst)
	if err != nil {
		return nil, nil, err
	}
	mcfg.Source, mcfg.Sink, mcfg.Recorder = opts.Source, opts.Sink, opts.Recorder
	s, err := legSession(opts, mcfg)
	if err != nil {
		return nil, nil, err
	}
	return s, ice, nil
}

func (e nodeEnv) refreshICE(ctx context.Context, path, profile string) ([]webrtc.ICEServer, *iceSet, error) {
	mcfg, ice, err := e.n.iceFor(ctx, path, profile, iceRestart)
	if err != nil {
		return nil, nil, err
	}
	return iceServersOf(mcfg), ice, nil
}

// reopen reaches the device again (circuits at once: the path that carried
// the old stream may be what died) and resumes the call on a new stream.
func (e nodeEnv) reopen(ctx context.Context, device peer.ID, callID string, ack uint64, avoid peer.ID) (sigLink, uint64, error) {
	n := e.n
	if err := n.connectAvoiding(ctx, device, 0, 0, avoid); err != nil {
		return nil, 0, err
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "parley signalling"), device, CallProtocol)
	if err != nil {
		return nil, 0, fmt.Errorf("open call stream to %s: %w", device.ShortString(), err)
	}
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	if err := wire.WriteJSON(s, callFrame{Type: sigResume, Call: callID, Ack: ack}, MaxCallFrame); err != nil {
		s.Reset()
		return nil, 0, fmt.Errorf("resume call on %s: %w", device.ShortString(), err)
	}
	b, err := wire.ReadFrame(s, MaxCallFrame)
	var f *callFrame
	if err == nil {
		f, err = decodeCallFrame(b)
	}
	if err == nil && (f.Call != callID || f.Type != sigResumed) {
		err = fmt.Errorf("device answered %s %q", f.Type, f.Reason)
	}
	if err != nil {
		s.Reset()
		return nil, 0, fmt.Errorf("resume call on %s: %w", device.ShortString(), err)
	}
	s.SetDeadline(time.Time{})
	return n.newLink(s), f.Ack, nil
}

// Call rings every device of a handle. It returns once the invites are out;
// watch the events, Info or Done for what happens next.
func (n *Node) Call(ctx context.Context, handle string, opts CallOptions) (*Call, error) {
	fail := func(err error) (*Call, error) {
		opts.discard()
		return nil, err
	}
	rec, err := n.resolve(ctx, handle, skipCache)
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
	mcfg, ice, err := n.iceFor(ctx, opts.Path, opts.Profile, iceFirst)
	if err != nil {
		return fail(err)
	}
	n.calls.mu.Lock()
	if n.calls.active != nil {
		n.calls.mu.Unlock()
		return fail(ErrBusy)
	}
	c := newCall(nodeEnv{n}, n.clock, n.timings, newCallID(), CallOutgoing, rec.Handle, opts)
	n.calls.byID[c.id] = c
	n.calls.mu.Unlock()
	n.publishCall(c)
	c.post(evIce{ice: ice})

	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for _, d := range devices {
		wg.Add(1)
		go func(d peer.ID) {
			defer wg.Done()
			if err := n.invite(ctx, c, d, mcfg); err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
				n.log.Info("invite failed", "call", c.id, "device", d, "err", err)
			}
		}(d)
	}
	wg.Wait()
	reply := make(chan error, 1)
	if !c.post(evInvitesDone{errs: errs, reply: reply}) {
		return c, nil // ended meanwhile (hung up): Info says why
	}
	select {
	case err := <-reply:
		if err != nil {
			return nil, fmt.Errorf("call %s: %w", handle, err)
		}
	case <-c.done:
		select {
		case err := <-reply:
			if err != nil {
				return nil, fmt.Errorf("call %s: %w", handle, err)
			}
		default:
		}
	}
	return c, nil
}

// invite prepares the leg to one device: a stream, a media session and its
// offer; the call's loop sends the invite.
func (n *Node) invite(ctx context.Context, c *Call, d peer.ID, mcfg media.Config) error {
	ctx, cancel := context.WithTimeout(ctx, callDialTimeout)
	defer cancel()
	if err := n.connectCall(ctx, d); err != nil {
		return err
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "parley signalling"), d, CallProtocol)
	if err != nil {
		return fmt.Errorf("open call stream to %s: %w", d.ShortString(), err)
	}
	opts := c.opts
	g := &gate{src: opts.Source, sink: opts.Sink, rec: opts.Recorder}
	mcfg.Source, mcfg.Sink = gatedSource{g}, gatedSink{g}
	if opts.Recorder != nil {
		mcfg.Recorder = gatedWriter{g}
	}
	sess, err := legSession(opts, mcfg)
	if err != nil {
		s.Reset()
		return err
	}
	l := &leg{device: d, session: sess, gate: g, inviteFrom: n.id.Handle(), inviteRecord: n.id.Record()}
	sess.OnLocalCandidate(func(cand string) { c.post(evLocalCandidate{l: l, cand: cand}) })
	offer, err := sess.CreateOffer(ctx)
	if err != nil {
		_ = sess.Close() // it carried no audio: nothing to report
		s.Reset()
		return err
	}
	l.link = n.newLink(s)
	if !c.post(evLegReady{l: l, offer: offer}) {
		_ = l.close() // the call ended before this leg joined it: nothing was recorded
		return errors.New("call already ended")
	}
	return nil
}

// handleCall serves a new call stream: an invite, or a resume of a call
// whose stream broke.
func (n *Node) handleCall(s network.Stream) {
	remote, ip := s.Conn().RemotePeer(), remoteIP(s.Conn())
	if !n.callLimit.acquireFrom(remote, ip) {
		s.Reset()
		return
	}
	release := sync.OnceFunc(func() { n.callLimit.releaseFrom(remote, ip) })
	f, err := readCallFrame(s, firstFrameTimeout)
	if err == nil && f.Type != sigInvite && f.Type != sigResume {
		err = fmt.Errorf("%w: expected invite or resume, got %s", ErrBadFrame, f.Type)
	}
	if err != nil {
		release()
		n.badInput.Warn("call stream reset", "peer", remote, "err", err)
		s.Reset()
		return
	}
	if f.Type == sigResume {
		release()
		n.resumeCall(s, remote, f)
		return
	}
	link := n.newLink(s)
	refuse := func(reason string) {
		link.send(callFrame{Type: sigReject, Call: f.Call, Seq: 1, Reason: reason})
		link.close()
		release()
	}
	callerHandle, guestVia, err := n.inviteCaller(f, remote)
	if errors.Is(err, ErrNoGuests) {
		refuse(rejectNoGuests)
		return
	}
	if err == nil {
		_, err = media.FingerprintFromSDP(f.SDP)
	}
	if err != nil {
		n.log.Warn("invite refused", "peer", remote, "err", err)
		refuse("bad invite")
		return
	}
	l := &leg{device: remote, link: link, offer: f.SDP, sendable: true, recv: f.Seq}
	c := makeCall(nodeEnv{n}, n.clock, n.timings, f.Call, CallIncoming, callerHandle, CallOptions{})
	c.info.Device, c.info.Guest = remote.String(), guestVia
	c.legs[remote] = l
	c.start() // the loop owns info and legs from here on
	reason, answerWith := n.admitIncoming(c)
	if reason != "" {
		c.post(evRefuse{reason: reason})
		release()
		return
	}
	// The slot is the call's until it ends.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-c.done
		release()
	}()
	c.post(evStartIncoming{})
	n.publishCall(c)
	if answerWith != nil {
		n.answerGlare(c, *answerWith) // after it rings: the caller hears ringing, then the answer
	}
	if n.cfg.AutoAnswer != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			opts, err := n.cfg.AutoAnswer(c.Info())
			if err != nil {
				n.log.Warn("auto-answer", "call", c.id, "err", err)
				c.Hangup()
				return
			}
			if err := c.Answer(n.ctx, opts); err != nil {
				n.log.Warn("auto-answer", "call", c.id, "err", err)
			}
		}()
	}
}

// resumeCall takes a new stream for an answered call from the device on it.
func (n *Node) resumeCall(s network.Stream, remote peer.ID, f *callFrame) {
	n.calls.mu.Lock()
	c := n.calls.byID[f.Call]
	n.calls.mu.Unlock()
	link := n.newLink(s)
	if c == nil || c.snapshot().Device != remote.String() {
		// No such call, or not this device's: say so, so a caller whose
		// call ended here stops trying.
		link.send(callFrame{Type: sigHangup, Call: f.Call, Seq: 1, Reason: "no such call"})
		link.close()
		return
	}
	if !c.post(evResume{remote: remote, link: link, peerAck: f.Ack}) {
		link.send(callFrame{Type: sigHangup, Call: f.Call, Seq: 1, Reason: "no such call"})
		link.close()
	}
}
