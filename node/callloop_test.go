package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
)

// The call state machine on a fake clock: fake links and sessions stand in
// for libp2p streams and pion, so every timer rule is stepped by hand and
// nothing waits on the wall clock. The real thing is tested in call_test.go
// and relay_test.go, and through real NATs by the lab.

// fakeLink records what a call sends and lets a test deliver frames.
type fakeLink struct {
	mu      sync.Mutex
	sent    []callFrame
	onFrame func(*callFrame)
	onDown  func(error)
	closed  bool
	wasRst  bool
}

func (l *fakeLink) send(f callFrame) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.sent = append(l.sent, f)
	}
}

func (l *fakeLink) start(onFrame func(*callFrame), onDown func(error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onFrame, l.onDown = onFrame, onDown
}

func (l *fakeLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}

func (l *fakeLink) reset(bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed, l.wasRst = true, true
}

// deliver hands the call a frame as the peer would send it.
func (l *fakeLink) deliver(f callFrame) {
	l.mu.Lock()
	on := l.onFrame
	l.mu.Unlock()
	on(&f)
}

// down breaks the link as a dead stream would.
func (l *fakeLink) down() {
	l.mu.Lock()
	on := l.onDown
	l.mu.Unlock()
	on(io.ErrUnexpectedEOF)
}

func (l *fakeLink) frames() []callFrame {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]callFrame(nil), l.sent...)
}

func (l *fakeLink) types() string {
	var out []string
	for _, f := range l.frames() {
		out = append(out, f.Type)
	}
	return strings.Join(out, " ")
}

func (l *fakeLink) limited() bool { return false }

func (l *fakeLink) relay() peer.ID { return "" }

func (l *fakeLink) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// fakeSession is a media session that does what the test says.
type fakeSession struct {
	mu         sync.Mutex
	onState    func(media.State)
	onPath     func(media.Path)
	answers    []string
	candidates []string
	restarts   atomic.Int32
	packets    atomic.Uint64
	first      chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
	// answerGate, when set, holds Answer until closed; remote lists the
	// offers answered, in order.
	answerGate chan struct{}
	remote     []string
}

func newFakeSession() *fakeSession {
	return &fakeSession{first: make(chan struct{}), done: make(chan struct{})}
}

func (s *fakeSession) CreateOffer(context.Context) (string, error) { return "v=0 offer", nil }
func (s *fakeSession) Answer(_ context.Context, offer string) (string, error) {
	s.mu.Lock()
	gate := s.answerGate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remote = append(s.remote, offer)
	return "v=0 answer to " + offer, nil
}
func (s *fakeSession) SetAnswer(sdp string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers = append(s.answers, sdp)
	return nil
}
func (s *fakeSession) AddRemoteCandidate(c string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.candidates = append(s.candidates, c)
	return nil
}
func (s *fakeSession) RestartICE(context.Context) (string, error) {
	return "v=0 restart " + string(rune('0'+s.restarts.Add(1))), nil
}
func (s *fakeSession) SetICEServers([]webrtc.ICEServer) error { return nil }
func (s *fakeSession) OnLocalCandidate(func(string))          {}
func (s *fakeSession) OnState(f func(media.State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onState = f
}
func (s *fakeSession) FirstAudio() <-chan struct{} { return s.first }
func (s *fakeSession) Done() <-chan struct{}       { return s.done }
func (s *fakeSession) PacketsReceived() uint64     { return s.packets.Load() }
func (s *fakeSession) Stats() media.Stats          { return media.Stats{PacketsReceived: s.packets.Load()} }
func (s *fakeSession) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}
func (s *fakeSession) OnPathChange(f func(media.Path)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onPath = f
}
func (s *fakeSession) path(p media.Path) {
	s.mu.Lock()
	f := s.onPath
	s.mu.Unlock()
	f(p)
}
func (s *fakeSession) state(st media.State) {
	s.mu.Lock()
	f := s.onState
	s.mu.Unlock()
	f(st)
}
func (s *fakeSession) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// fakeEnv is the node's side, recorded.
type fakeEnv struct {
	mu        sync.Mutex
	active    *Call
	endedN    int
	published []string
	glare     []string
	wg        sync.WaitGroup

	// answerGate, when set, holds answerSession until it is closed.
	answerGate chan struct{}
	session    *fakeSession
	// reopens receives each reopen; the test answers on its reply.
	reopens chan reopenReq
}

type reopenReq struct {
	ack   uint64
	reply chan reopenResult
}

type reopenResult struct {
	link    sigLink
	peerAck uint64
	err     error
}

func newFakeEnv() *fakeEnv {
	return &fakeEnv{session: newFakeSession(), reopens: make(chan reopenReq, 16)}
}

func (e *fakeEnv) logger() *slog.Logger { return slog.New(slog.DiscardHandler) }
func (e *fakeEnv) publish(c *Call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.published = append(e.published, c.snapshot().State)
}
func (e *fakeEnv) activate(c *Call) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active != nil && e.active != c {
		return false
	}
	e.active = c
	return true
}
func (e *fakeEnv) ended(c *Call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active == c {
		e.active = nil
	}
	e.endedN++
}
func (e *fakeEnv) lostGlare(p string, _ CallOptions) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.glare = append(e.glare, p)
}
func (e *fakeEnv) answerSession(ctx context.Context, _ CallOptions) (callSession, *iceSet, error) {
	if e.answerGate != nil {
		select {
		case <-e.answerGate:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	return e.session, &iceSet{}, nil
}
func (e *fakeEnv) refreshICE(context.Context, string, string) ([]webrtc.ICEServer, *iceSet, error) {
	return nil, &iceSet{}, nil
}
func (e *fakeEnv) reopen(ctx context.Context, _ peer.ID, _ string, ack uint64, _ peer.ID) (sigLink, uint64, error) {
	r := reopenReq{ack: ack, reply: make(chan reopenResult, 1)}
	e.reopens <- r
	select {
	case res := <-r.reply:
		return res.link, res.peerAck, res.err
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}
func (e *fakeEnv) direct(peer.ID) bool { return false }

func (e *fakeEnv) spawn(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}
func (e *fakeEnv) isActive(c *Call) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active == c
}

// machine is one call under test.
type machine struct {
	t   *testing.T
	env *fakeEnv
	clk *clock.Fake
	c   *Call
}

const testTick = 100 * time.Millisecond

func newMachine(t *testing.T, dir Direction, opts CallOptions) *machine {
	t.Helper()
	env := newFakeEnv()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	c := newCall(env, clk, CallTimings{Tick: testTick}, "0a0b", dir, "bob", opts)
	m := &machine{t: t, env: env, clk: clk, c: c}
	t.Cleanup(func() {
		c.Hangup()
		env.wg.Wait()
	})
	return m
}

// step moves the fake clock on by d, a tick at a time, letting the call
// handle what each tick set off.
func (m *machine) step(d time.Duration) {
	for ; d > 0; d -= min(d, testTick) {
		m.clk.Advance(min(d, testTick))
		m.c.sync()
	}
}

// do runs f on the call's loop, so a test may read loop-owned state.
func (m *machine) do(f func()) {
	done := make(chan struct{})
	if m.c.post(evDo{f: f, done: done}) {
		select {
		case <-done:
		case <-m.c.Done():
		}
	}
}

// waitIdle waits until no re-open attempt is under way.
func (m *machine) waitIdle() {
	m.t.Helper()
	nodetest.Eventually(m.t, 5*time.Second, "the re-open attempt to finish", func() bool {
		busy := false
		m.do(func() { busy = m.c.reopening })
		return !busy
	})
}

func (m *machine) loopState() callState {
	st := stEnded
	m.do(func() { st = m.c.state })
	return st
}

// stepHeard is step with the peer answering every tick (a pong), so only
// the media rules are at work, not the dead-link one.
func (m *machine) stepHeard(l *fakeLink, d time.Duration) {
	for ; d > 0; d -= min(d, testTick) {
		l.deliver(callFrame{Type: sigPong, Call: "0a0b"})
		m.c.sync()
		m.clk.Advance(min(d, testTick))
		m.c.sync()
	}
}

// addLeg gives an outgoing call a ready leg to device name.
func (m *machine) addLeg(name string) (*fakeLink, *fakeSession) {
	l, s := &fakeLink{}, newFakeSession()
	m.c.post(evLegReady{l: &leg{device: peer.ID(name), link: l, session: s, gate: &gate{}}, offer: "v=0 offer"})
	m.c.sync()
	return l, s
}

// incoming makes an incoming call ring with its link.
func (m *machine) incoming() *fakeLink {
	l := &fakeLink{}
	m.do(func() {
		m.c.legs[peer.ID("caller")] = &leg{device: peer.ID("caller"), link: l, offer: "v=0 offer", sendable: true, recv: 1}
	})
	m.c.post(evStartIncoming{})
	m.c.sync()
	return l
}

func (m *machine) invitesDone() {
	reply := make(chan error, 1)
	m.c.post(evInvitesDone{reply: reply})
	if err := <-reply; err != nil {
		m.t.Fatal(err)
	}
}

func (m *machine) wantEnded(reason string) {
	m.t.Helper()
	select {
	case <-m.c.Done():
	case <-time.After(5 * time.Second):
		m.t.Fatalf("call did not end; state %s", m.c.snapshot().State)
	}
	if got := m.c.snapshot().Reason; got != reason {
		m.t.Fatalf("call ended with %q, want %q", got, reason)
	}
}

func (m *machine) wantState(want string) {
	m.t.Helper()
	if got := m.c.snapshot().State; got != want {
		m.t.Fatalf("state %s, want %s", got, want)
	}
}

func TestCallMachineRingTimeout(t *testing.T) {
	m := newMachine(t, CallOutgoing, CallOptions{RingTimeout: 30 * time.Second})
	a, _ := m.addLeg("laptop")
	b, _ := m.addLeg("phone")
	m.invitesDone()
	a.deliver(callFrame{Type: sigRinging, Call: "0a0b", Seq: 1})
	m.c.sync()
	m.wantState(CallRinging)
	m.step(29900 * time.Millisecond)
	m.wantState(CallRinging)
	m.step(200 * time.Millisecond)
	m.wantEnded("no answer")
	for name, l := range map[string]*fakeLink{"laptop": a, "phone": b} {
		if got := l.types(); got != "invite cancel" {
			t.Errorf("%s was sent %q, want invite then cancel", name, got)
		}
		if f := l.frames(); f[len(f)-1].Reason != "timeout" || !l.isClosed() {
			t.Errorf("%s: last frame %+v, closed %v", name, f[len(f)-1], l.isClosed())
		}
	}
}

func TestCallMachineAnsweredElsewhere(t *testing.T) {
	m := newMachine(t, CallOutgoing, CallOptions{})
	a, as := m.addLeg("laptop")
	b, bs := m.addLeg("phone")
	m.invitesDone()
	a.deliver(callFrame{Type: sigAccept, Call: "0a0b", Seq: 1, SDP: "v=0 answer"})
	m.c.sync()
	m.wantState(CallConnecting)
	if got := b.types(); got != "invite cancel" || b.frames()[1].Reason != ErrAnsweredElsewhere.Error() || !b.isClosed() || !bs.closed() {
		t.Fatalf("the phone was sent %q and left open=%v: want a cancel, answered elsewhere", got, !b.isClosed())
	}
	if len(as.answers) != 1 || !m.env.isActive(m.c) {
		t.Fatalf("answer not applied (%v) or device not busy", as.answers)
	}
	// A second accept, late, is told the call went elsewhere.
	close(as.first)
	nodetest.Eventually(t, 5*time.Second, "first audio to make the call active", func() bool { return m.c.snapshot().State == CallActive })
	if m.c.snapshot().Device != peer.ID("laptop").String() {
		t.Fatalf("device %q", m.c.snapshot().Device)
	}
}

// answeredMachine is an outgoing call whose one callee device, "laptop",
// has accepted: the start of every test of a call in progress.
func answeredMachine(t *testing.T) (*machine, *fakeLink, *fakeSession) {
	t.Helper()
	m := newMachine(t, CallOutgoing, CallOptions{})
	a, s := m.addLeg("laptop")
	m.invitesDone()
	a.deliver(callFrame{Type: sigAccept, Call: "0a0b", Seq: 1, SDP: "v=0 answer"})
	m.c.sync()
	return m, a, s
}

func TestCallMachineRestartBackoff(t *testing.T) {
	m, a, s := answeredMachine(t)
	s.state(media.StateConnected)
	m.c.sync()
	// The peer stays heard (pongs), so only the restart rule is at work.
	s.state(media.StateDisconnected)
	m.c.sync()
	m.stepHeard(a, 200*time.Millisecond)
	if n := s.restarts.Load(); n != 0 {
		t.Fatalf("restarted after 200 ms (%d)", n)
	}
	m.stepHeard(a, 100*time.Millisecond)
	nodetest.Eventually(t, 5*time.Second, "first ICE restart offer", func() bool { return strings.Count(a.types(), sigRestart) == 1 })
	// Each unanswered restart is followed by another after RestartRetry,
	// five in all; the sixth attempt ends the call.
	for i := 2; i <= 5; i++ {
		m.stepHeard(a, 2900*time.Millisecond)
		if got := strings.Count(a.types(), sigRestart); got != i-1 {
			t.Fatalf("restart %d came early: %d restarts", i, got)
		}
		m.stepHeard(a, 100*time.Millisecond)
		nodetest.Eventually(t, 5*time.Second, "next ICE restart", func() bool { m.c.sync(); return strings.Count(a.types(), sigRestart) == i })
	}
	m.stepHeard(a, 3*time.Second)
	m.wantEnded(ReasonNoMediaPath)
	if f := a.frames(); f[len(f)-1].Type != sigHangup || f[len(f)-1].Reason != ReasonNoMediaPath {
		t.Fatalf("peer not told: last frame %+v", f[len(f)-1])
	}
	// Restarts are numbered, so a late answer to an old one is ignored.
	var nums []uint32
	for _, f := range a.frames() {
		if f.Type == sigRestart {
			nums = append(nums, f.Restart)
		}
	}
	for i, n := range nums {
		if n != uint32(i+1) {
			t.Fatalf("restart numbers %v", nums)
		}
	}
}

func TestCallMachineStaleRestartAnswerIgnored(t *testing.T) {
	m, a, s := answeredMachine(t)
	s.state(media.StateFailed)
	m.c.sync()
	m.stepHeard(a, 300*time.Millisecond)
	nodetest.Eventually(t, 5*time.Second, "restart 1", func() bool { m.c.sync(); return strings.Count(a.types(), sigRestart) == 1 })
	m.stepHeard(a, 3*time.Second)
	nodetest.Eventually(t, 5*time.Second, "restart 2", func() bool { m.c.sync(); return strings.Count(a.types(), sigRestart) == 2 })
	a.deliver(callFrame{Type: sigRestartAnswer, Call: "0a0b", Seq: 2, Restart: 1, SDP: "v=0 stale"})
	a.deliver(callFrame{Type: sigRestartAnswer, Call: "0a0b", Seq: 3, Restart: 2, SDP: "v=0 fresh"})
	a.deliver(callFrame{Type: sigRestartAnswer, Call: "0a0b", Seq: 3, Restart: 2, SDP: "v=0 duplicate"})
	m.c.sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Join(s.answers, "|") != "v=0 answer|v=0 fresh" {
		t.Fatalf("answers applied: %q", s.answers)
	}
}

func TestCallMachineSignallingResumes(t *testing.T) {
	m := newMachine(t, CallOutgoing, CallOptions{})
	a, s := m.addLeg("laptop")
	m.invitesDone()
	a.deliver(callFrame{Type: sigRinging, Call: "0a0b", Seq: 1})
	a.deliver(callFrame{Type: sigAccept, Call: "0a0b", Seq: 2, SDP: "v=0 answer"})
	a.deliver(callFrame{Type: sigCandidate, Call: "0a0b", Seq: 3, Ack: 1, Candidate: "c1"})
	m.c.sync()
	s.state(media.StateConnected)
	m.c.sync()

	// The stream dies; the caller re-opens at once, telling what it has.
	a.down()
	m.c.sync()
	m.wantState(CallConnecting)
	var r reopenReq
	select {
	case r = <-m.env.reopens:
	case <-time.After(5 * time.Second):
		t.Fatal("no re-open of signalling")
	}
	if r.ack != 3 {
		t.Fatalf("resume said ack %d, want 3", r.ack)
	}
	// Meanwhile a hangup-worthy frame of ours waits in the log: a
	// candidate trickled while the link was down.
	var w *leg
	m.do(func() { w = m.c.winner })
	m.c.post(evLocalCandidate{l: w, cand: "mine"})
	m.c.sync()
	if got := a.types(); strings.Contains(got, "mine") {
		t.Fatal("sent on a dead link")
	}
	b := &fakeLink{}
	r.reply <- reopenResult{link: b, peerAck: 1} // the peer has seen our invite only
	nodetest.Eventually(t, 5*time.Second, "frames sent again on the new link", func() bool { m.c.sync(); return len(b.frames()) > 0 })
	var resent []string
	for _, f := range b.frames() {
		resent = append(resent, f.Type+":"+f.Candidate)
	}
	// invite (seq 1) was acknowledged; the last frame is the one queued
	// while signalling was down.
	if len(resent) == 0 || resent[len(resent)-1] != "candidate:mine" || strings.Contains(strings.Join(resent, " "), "invite") {
		t.Fatalf("resent %v", resent)
	}
	// A frame the peer sends again (it did not know we had it) is not
	// applied twice; a frame of the dead link is ignored.
	b.deliver(callFrame{Type: sigCandidate, Call: "0a0b", Seq: 3, Candidate: "c1"})
	a.deliver(callFrame{Type: sigCandidate, Call: "0a0b", Seq: 4, Candidate: "stale-link"})
	b.deliver(callFrame{Type: sigCandidate, Call: "0a0b", Seq: 4, Candidate: "c2"})
	m.c.sync()
	s.mu.Lock()
	got := strings.Join(s.candidates, " ")
	s.mu.Unlock()
	if got != "c1 c2" {
		t.Fatalf("candidates applied %q, want c1 c2", got)
	}
	// A hangup still travels, on the new link.
	b.deliver(callFrame{Type: sigHangup, Call: "0a0b", Seq: 5})
	m.wantEnded("remote hung up")
}

// A call records every pair its media moves to, timed from its start: a
// relayed start, then the direct pair found later.
func TestCallMachinePathsRecorded(t *testing.T) {
	m := newMachine(t, CallIncoming, CallOptions{})
	m.incoming()
	reply := make(chan error, 1)
	m.c.post(evAnswer{opts: CallOptions{}, reply: reply})
	if err := <-reply; err != nil {
		t.Fatal(err)
	}
	m.wantState(CallConnecting)
	m.step(150 * time.Millisecond)
	m.env.session.path(media.Path{LocalType: "relay", RemoteType: "srflx", Local: "203.0.113.10:50000", Remote: "198.51.100.7:4000", Protocol: "udp"})
	m.step(2 * time.Second)
	m.env.session.path(media.Path{LocalType: "host", RemoteType: "srflx", Local: "192.0.2.2:4000", Remote: "198.51.100.7:4000", Protocol: "udp"})
	m.step(testTick)
	paths := m.c.Info().Paths
	if len(paths) != 2 {
		t.Fatalf("paths %+v, want the relayed one and the direct one", paths)
	}
	if paths[0].Path != "relay" || paths[0].Tier != "relay" || paths[1].Tier != TierDirect || paths[1].Path != "srflx" {
		t.Fatalf("paths %+v", paths)
	}
	if !(paths[0].AtMS < paths[1].AtMS) || paths[1].AtMS-paths[0].AtMS < 2000 {
		t.Fatalf("paths %+v: not timed by the call's clock", paths)
	}
	for range maxPathSwitches + 5 {
		m.env.session.path(media.Path{LocalType: "host", RemoteType: "host", Local: "192.0.2.2:4000", Remote: "192.0.2.3:4000", Protocol: "udp"})
	}
	m.step(testTick)
	if n := len(m.c.Info().Paths); n != maxPathSwitches {
		t.Fatalf("%d paths kept, want at most %d", n, maxPathSwitches)
	}
}

func TestCallMachineLostPeerEnds(t *testing.T) {
	closed := &closeCounter{}
	m := newMachine(t, CallIncoming, CallOptions{})
	l := m.incoming()
	reply := make(chan error, 1)
	m.c.post(evAnswer{opts: CallOptions{Closers: []io.Closer{closed}}, reply: reply})
	if err := <-reply; err != nil {
		t.Fatal(err)
	}
	m.wantState(CallConnecting)
	if !m.env.isActive(m.c) {
		t.Fatal("answered call does not hold the device")
	}
	// Media flows for a while, then the caller is gone: no packets, no
	// frames, no answer to pings.
	for range 20 {
		m.env.session.packets.Add(50)
		m.step(testTick)
	}
	m.step(9800 * time.Millisecond)
	m.wantState(CallConnecting)
	if !strings.Contains(l.types(), sigPing) {
		t.Fatalf("no ping while the peer was silent: %q", l.types())
	}
	m.step(300 * time.Millisecond)
	m.wantEnded(ReasonLost)
	if m.env.isActive(m.c) || closed.n.Load() != 1 || !m.env.session.closed() {
		t.Fatalf("lost call still holds the device (%v), its audio ends (%d closes) or media", m.env.isActive(m.c), closed.n.Load())
	}
}

func TestCallMachineCancelWhileAnswering(t *testing.T) {
	closed := &closeCounter{}
	m := newMachine(t, CallIncoming, CallOptions{})
	m.env.answerGate = make(chan struct{})
	l := m.incoming()
	answered := make(chan error, 1)
	go func() {
		answered <- m.c.Answer(context.Background(), CallOptions{Closers: []io.Closer{closed}})
	}()
	nodetest.Eventually(t, 5*time.Second, "answering", func() bool { return m.loopState() == stAnswering })
	l.deliver(callFrame{Type: sigCancel, Call: "0a0b", Seq: 2, Reason: "cancelled"})
	m.wantEnded("cancelled")
	close(m.env.answerGate)
	if err := <-answered; !errors.Is(err, ErrCallState) {
		t.Fatalf("Answer of a call cancelled meanwhile = %v, want ErrCallState", err)
	}
	m.env.wg.Wait()
	if m.env.isActive(m.c) || closed.n.Load() != 1 {
		t.Fatalf("device busy %v, closers closed %d times", m.env.isActive(m.c), closed.n.Load())
	}
}

func TestCallMachineIncomingRingTimeout(t *testing.T) {
	m := newMachine(t, CallIncoming, CallOptions{})
	l := m.incoming()
	if l.types() != sigRinging {
		t.Fatalf("sent %q, want ringing", l.types())
	}
	m.step(DefaultRingTimeout + 4900*time.Millisecond)
	m.wantState(CallRinging)
	m.step(200 * time.Millisecond)
	m.wantEnded("no answer")
}

func TestCallMachineDeadLinkReopened(t *testing.T) {
	m, a, s := answeredMachine(t)
	s.state(media.StateConnected)
	s.packets.Add(1)
	m.step(testTick)
	// Media stops and the link answers nothing: after LinkDead of pings
	// without a pong the link is dropped and re-opened, before the call
	// would count as lost.
	m.step(4000 * time.Millisecond)
	select {
	case r := <-m.env.reopens:
		r.reply <- reopenResult{err: errors.New("unreachable")}
	case <-time.After(5 * time.Second):
		t.Fatalf("silent link not re-opened; sent %q", a.types())
	}
	m.waitIdle()
	if !a.isClosed() {
		t.Fatal("dead link not reset")
	}
	m.wantState(CallConnecting)
	// Re-opening goes on with backoff until the peer is lost.
	m.step(time.Second)
	select {
	case r := <-m.env.reopens:
		r.reply <- reopenResult{err: errors.New("unreachable")}
	case <-time.After(5 * time.Second):
		t.Fatal("no second attempt")
	}
	m.waitIdle()
	for m.loopState() != stEnded && m.clk.Now().Sub(time.Unix(1_700_000_000, 0)) < 20*time.Second {
		select {
		case r := <-m.env.reopens:
			r.reply <- reopenResult{err: errors.New("unreachable")}
			m.waitIdle()
		default:
		}
		m.step(testTick)
	}
	m.wantEnded(ReasonLost)
}

func TestCallMachineGlareGiveWay(t *testing.T) {
	if glareWinner("0a", "0b") != "0a" || glareWinner("ff", "0b") != "0b" {
		t.Fatal("glare must keep the lower call ID on both sides")
	}
	closed := &closeCounter{}
	m := newMachine(t, CallOutgoing, CallOptions{Closers: []io.Closer{closed}})
	a, _ := m.addLeg("laptop")
	m.invitesDone()
	opts, ok := m.c.giveWay()
	if !ok || len(opts.Closers) != 1 {
		t.Fatalf("giveWay = %v, %v", opts, ok)
	}
	m.wantEnded(rejectGlare)
	if closed.n.Load() != 0 {
		t.Fatal("the audio ends handed to the winning call were closed")
	}
	if got := a.types(); got != "invite cancel" {
		t.Fatalf("callee was sent %q", got)
	}
	// The other way: the peer refuses us for glare.
	m2 := newMachine(t, CallOutgoing, CallOptions{})
	b, _ := m2.addLeg("laptop")
	m2.invitesDone()
	b.deliver(callFrame{Type: sigReject, Call: "0a0b", Seq: 1, Reason: rejectGlare})
	m2.wantEnded(rejectGlare)
	if len(m2.env.glare) != 1 {
		t.Fatal("a lost glare did not hand its audio ends on")
	}
}

type closeCounter struct{ n atomic.Int32 }

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

// TestCallMachineCandidatesWaitForRestartOffer: the callee answers an ICE
// restart off its loop; candidates of the new offer that arrive meanwhile
// (all at once, when a resumed link sends them again) are applied only
// after the offer, or pion would drop them for their unknown ufrag.
func TestCallMachineCandidatesWaitForRestartOffer(t *testing.T) {
	m := newMachine(t, CallIncoming, CallOptions{})
	l := m.incoming()
	reply := make(chan error, 1)
	m.c.post(evAnswer{opts: CallOptions{}, reply: reply})
	if err := <-reply; err != nil {
		t.Fatal(err)
	}
	s := m.env.session
	gate := make(chan struct{})
	s.mu.Lock()
	s.answerGate = gate
	s.mu.Unlock()
	l.deliver(callFrame{Type: sigRestart, Call: "0a0b", Seq: 2, Restart: 1, SDP: "v=0 restart 1"})
	l.deliver(callFrame{Type: sigCandidate, Call: "0a0b", Seq: 3, Candidate: "after-restart"})
	m.c.sync()
	s.mu.Lock()
	early := len(s.candidates)
	s.mu.Unlock()
	if early != 0 {
		t.Fatal("a candidate of the restart offer was applied before the offer")
	}
	close(gate)
	nodetest.Eventually(t, 5*time.Second, "the restart answer", func() bool { return strings.Contains(l.types(), sigRestartAnswer) })
	m.c.sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Join(s.candidates, " ") != "after-restart" || s.remote[len(s.remote)-1] != "v=0 restart 1" {
		t.Fatalf("candidates %v after offers %v", s.candidates, s.remote)
	}
}

func TestCircuitRelay(t *testing.T) {
	relay := "12D3KooWGvvd9uNW4qSdhUehVjNWZez6RCgHXM4bRQE8bBibjJyC"
	dest := "12D3KooWBGaoUFHj5ntYrUUBRfFTfQRETSnbKWWfZEyohn3qPXsB"
	cases := []struct{ in, want string }{
		{"/ip4/203.0.113.10/tcp/443/p2p/" + relay + "/p2p-circuit", relay},
		{"/ip4/203.0.113.10/udp/4100/quic-v1/p2p/" + relay + "/p2p-circuit/p2p/" + dest, relay},
		{"/p2p/" + relay + "/p2p-circuit", relay},
		{"/ip4/198.51.100.10/tcp/4100/p2p/" + dest, ""},
		{"/ip4/198.51.100.10/udp/4100/quic-v1", ""},
	}
	for _, tc := range cases {
		a, err := ma.NewMultiaddr(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := circuitRelay(a); got.String() != tc.want && !(tc.want == "" && got == "") {
			t.Errorf("circuitRelay(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestCallMachineEarlyCandidates: candidates an outgoing leg gathers while
// its invite is being prepared (before the leg joins the call) go out
// after the invite, in order, instead of being lost; a leg that never
// joins sends nothing.
func TestCallMachineEarlyCandidates(t *testing.T) {
	m := newMachine(t, CallOutgoing, CallOptions{})
	link := &fakeLink{}
	l := &leg{device: peer.ID("laptop"), link: link, session: newFakeSession(), gate: &gate{}}
	m.c.post(evLocalCandidate{l: l, cand: "cand-1"})
	m.c.post(evLocalCandidate{l: l, cand: "cand-2"})
	m.c.post(evLegReady{l: l, offer: "v=0 offer"})
	m.c.post(evLocalCandidate{l: l, cand: "cand-3"})
	m.c.sync()
	var got []string
	for _, f := range link.frames() {
		switch f.Type {
		case sigInvite:
			got = append(got, "invite")
		case sigCandidate:
			got = append(got, f.Candidate)
		}
	}
	if want := "invite cand-1 cand-2 cand-3"; strings.Join(got, " ") != want {
		t.Fatalf("the leg sent %q, want %q", strings.Join(got, " "), want)
	}
}
