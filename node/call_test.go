package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/supernode"
)

// loopbackMedia keeps ICE on 127.0.0.1 so calls between in-process nodes are
// fast and deterministic.
var loopbackMedia = media.Config{IncludeLoopback: true, IPFilter: func(ip net.IP) bool { return ip.IsLoopback() }}

func startCallNode(t testing.TB, home string, sn *supernode.Supernode, auto func(CallInfo) (CallOptions, error)) *Node {
	t.Helper()
	return startCallNodeWith(t, home, sn, auto, CallTimings{})
}

func startCallNodeWith(t testing.TB, home string, sn *supernode.Supernode, auto func(CallInfo) (CallOptions, error), timings CallTimings) *Node {
	t.Helper()
	return startNodeWith(t, Config{Home: home, Listen: nodetest.Loopback, Bootstrap: []peer.AddrInfo{sn.AddrInfo()},
		Media: loopbackMedia, AutoAnswer: auto, CallTimings: timings})
}

// linkDevice makes a second device of primary's account in a new home.
func linkDevice(t *testing.T, primaryHome, name string) string {
	t.Helper()
	prim, err := LoadIdentity(primaryHome)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	dev, err := JoinIdentity(home, name)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := prim.AddDevice(dev.Self(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.AdoptRecord(rec); err != nil {
		t.Fatal(err)
	}
	return home
}

// waitCall waits for a call event that satisfies ok.
func waitCall(t *testing.T, ch <-chan Event, what string, ok func(CallInfo) bool) CallInfo {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, open := <-ch:
			if !open {
				t.Fatalf("events closed while waiting for %s", what)
			}
			if e.Type == "call" && ok(*e.Call) {
				return *e.Call
			}
		case <-timeout:
			t.Fatalf("no call event %s within 20s", what)
		}
	}
}

// tee records what a source produced, so a test compares with what was
// really sent.
type tee struct {
	mu  sync.Mutex
	src media.Source
	out []int16
}

func (s *tee) ReadFrame(f []int16) error {
	err := s.src.ReadFrame(f)
	s.mu.Lock()
	s.out = append(s.out, f...)
	s.mu.Unlock()
	return err
}

func (s *tee) samples() []int16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int16(nil), s.out...)
}

func TestCallRingAllAnsweredElsewhere(t *testing.T) {
	sn := startSupernode(t)
	aliceHome, bobHome := initHome(t, "alice"), initHome(t, "bob")
	phoneHome := linkDevice(t, bobHome, "bob-phone")
	alice := startCallNode(t, aliceHome, sn, nil)
	laptop := startCallNode(t, bobHome, sn, nil)
	phone := startCallNode(t, phoneHome, sn, nil)
	ctx := context.Background()

	lapEv, stop1 := laptop.Subscribe()
	defer stop1()
	phoneEv, stop2 := phone.Subscribe()
	defer stop2()
	aliceEv, stop3 := alice.Subscribe()
	defer stop3()

	src := &tee{src: media.SpeechLikeSource(7)}
	call, err := alice.Call(ctx, "bob", CallOptions{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ringLaptop := waitCall(t, lapEv, "ringing on the laptop", func(c CallInfo) bool { return c.State == CallRinging })
	waitCall(t, phoneEv, "ringing on the phone", func(c CallInfo) bool { return c.State == CallRinging })
	waitCall(t, aliceEv, "both devices ringing", func(c CallInfo) bool { return c.DevicesRang == 2 })
	if ringLaptop.Peer != "alice" || ringLaptop.ID != call.ID() {
		t.Fatalf("laptop rings for %+v", ringLaptop)
	}

	capture := media.NewCaptureSink(0)
	lc, err := laptop.FindCall("")
	if err != nil {
		t.Fatal(err)
	}
	if err := lc.Answer(ctx, CallOptions{Sink: capture}); err != nil {
		t.Fatal(err)
	}
	ended := waitCall(t, phoneEv, "phone stops ringing", func(c CallInfo) bool { return c.State == CallEnded })
	if ended.Reason != "answered elsewhere" || !ended.AnsweredElsewhere {
		t.Fatalf("phone ended with %q", ended.Reason)
	}
	active := waitCall(t, aliceEv, "call active", func(c CallInfo) bool { return c.State == CallActive })
	if active.Device != laptop.ID().String() || active.SetupMS <= 0 {
		t.Fatalf("active call %+v", active)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := capture.Wait(wctx, 3*media.SampleRate); err != nil {
		t.Fatalf("3 s of audio did not arrive: %v", err)
	}
	info := call.Info()
	if info.Stats == nil || info.Stats.Path != "host" || info.Stats.MOS < 4 {
		t.Fatalf("stats %+v", info.Stats)
	}
	call.Hangup()
	waitCall(t, lapEv, "laptop sees the hangup", func(c CallInfo) bool { return c.State == CallEnded && c.Reason == "remote hung up" })

	peak, _ := media.SegmentCorrelation(src.samples(), capture.Samples(), media.SampleRate)
	if peak < 0.9 {
		t.Fatalf("received audio correlates %.3f with what was sent, want >= 0.9", peak)
	}
	t.Logf("correlation %.3f, setup %.1f ms, rtt %.2f ms, MOS %.2f", peak, active.SetupMS, info.Stats.RTTMS, info.Stats.MOS)
}

func TestCallRejectedBusyUnreachable(t *testing.T) {
	sn := startSupernode(t)
	alice := startCallNode(t, initHome(t, "alice"), sn, nil)
	bobHome := initHome(t, "bob")
	bob := startCallNode(t, bobHome, sn, nil)
	ctx := context.Background()
	bobEv, stop := bob.Subscribe()
	defer stop()

	t.Run("rejected", func(t *testing.T) {
		call, err := alice.Call(ctx, "bob", CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitCall(t, bobEv, "ringing", func(c CallInfo) bool { return c.State == CallRinging })
		bc, err := bob.FindCall(call.ID())
		if err != nil {
			t.Fatal(err)
		}
		if err := bc.Reject(); err != nil {
			t.Fatal(err)
		}
		<-call.Done()
		if r := call.Info().Reason; r != "declined" {
			t.Fatalf("caller hears %q, want declined", r)
		}
	})

	t.Run("busy", func(t *testing.T) {
		carol := startCallNode(t, initHome(t, "carol"), sn, func(CallInfo) (CallOptions, error) { return CallOptions{}, nil })
		carolEv, stopC := carol.Subscribe()
		defer stopC()
		first, err := bob.Call(ctx, "carol", CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitCall(t, carolEv, "carol auto-answers", func(c CallInfo) bool { return c.State == CallActive })
		second, err := alice.Call(ctx, "carol", CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-second.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("busy callee never refused")
		}
		if r := second.Info().Reason; r != "busy" {
			t.Fatalf("second caller hears %q, want busy", r)
		}
		first.Hangup()
	})

	t.Run("no device online", func(t *testing.T) {
		bob.Close()
		start := time.Now()
		_, err := alice.Call(ctx, "bob", CallOptions{})
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("call to an offline handle: %v", err)
		}
		if el := time.Since(start); el > 30*time.Second {
			t.Fatalf("took %s", el)
		}
	})
}

func TestCallHangupReleasesEverything(t *testing.T) {
	sn := startSupernode(t)
	auto := func(CallInfo) (CallOptions, error) { return CallOptions{Source: media.SpeechLikeSource(1)}, nil }
	alice := startCallNode(t, initHome(t, "alice"), sn, nil)
	bob := startCallNode(t, initHome(t, "bob"), sn, auto)
	ctx := context.Background()
	call := func(hangupByCallee bool) {
		ev, stop := alice.Subscribe()
		defer stop()
		c, err := alice.Call(ctx, "bob", CallOptions{Source: media.SpeechLikeSource(2)})
		if err != nil {
			t.Fatal(err)
		}
		waitCall(t, ev, "active", func(ci CallInfo) bool { return ci.State == CallActive })
		if hangupByCallee {
			bc, err := bob.FindCall(c.ID())
			if err != nil {
				t.Fatal(err)
			}
			bc.Hangup()
		} else {
			c.Hangup()
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("call did not end")
		}
		bc, _ := bob.FindCall(c.ID())
		if bc != nil {
			select {
			case <-bc.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("callee's call did not end")
			}
		}
	}
	call(false) // warm up: pion and quic start package-level goroutines once
	base := runtime.NumGoroutine()
	for _, byCallee := range []bool{false, true} {
		call(byCallee)
		deadline := time.Now().Add(15 * time.Second)
		for runtime.NumGoroutine() > base+2 {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("hangup by callee=%v: %d goroutines, baseline %d\n%s", byCallee, runtime.NumGoroutine(), base, buf[:n])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestTenConcurrentCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("20 nodes and 10 calls; skipped with -short")
	}
	sn := startSupernode(t)
	pairs := 10
	if raceEnabled {
		// Ten real-time calls under the race detector starve two cores;
		// three still run every call's goroutines side by side.
		pairs = 3
	}
	type pair struct {
		caller, callee *Node
		sink           *media.CaptureSink
		src            *tee
	}
	ps := make([]*pair, pairs)
	for i := range ps {
		p := &pair{sink: media.NewCaptureSink(0), src: &tee{src: media.SpeechLikeSource(uint64(i))}}
		sink := p.sink
		p.caller = startCallNode(t, initHome(t, fmt.Sprintf("caller%d", i)), sn, nil)
		p.callee = startCallNode(t, initHome(t, fmt.Sprintf("callee%d", i)), sn, func(CallInfo) (CallOptions, error) {
			return CallOptions{Sink: sink}, nil
		})
		ps[i] = p
	}
	var wg sync.WaitGroup
	errs := make(chan error, pairs)
	for i, p := range ps {
		wg.Add(1)
		go func(i int, p *pair) {
			defer wg.Done()
			c, err := p.caller.Call(context.Background(), fmt.Sprintf("callee%d", i), CallOptions{Source: p.src})
			if err != nil {
				errs <- err
				return
			}
			defer c.Hangup()
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			if err := p.sink.Wait(ctx, 2*media.SampleRate); err != nil {
				errs <- fmt.Errorf("pair %d: %w", i, err)
				return
			}
			// Ten calls on two cores: a stall at start-up may conceal a
			// frame or two; the audio must still match, half-second by
			// half-second.
			if med := medianSegmentCorrelation(p.src.samples(), p.sink.Samples()); med < 0.9 {
				st, _ := c.MediaStats()
				errs <- fmt.Errorf("pair %d: median segment correlation %.3f (caller side: concealed %v, late %d, loss %.1f%%)", i, med, st.Concealed, st.LatePackets, st.LossPercent)
			}
		}(i, p)
	}
	wg.Wait()
	close(errs)
	var msgs []string
	for err := range errs {
		msgs = append(msgs, err.Error())
	}
	if len(msgs) > 0 {
		t.Fatal(strings.Join(msgs, "\n"))
	}
}

// medianSegmentCorrelation aligns each half second of received audio with
// what was sent on its own and returns the median of their correlations.
func medianSegmentCorrelation(sent, received []int16) float64 {
	seg := media.SampleRate / 2
	var cs []float64
	for off := 0; off+seg <= len(received); off += seg {
		p, _ := media.Correlation(sent, received[off:off+seg], len(sent))
		cs = append(cs, p)
	}
	if len(cs) == 0 {
		return 0
	}
	sort.Float64s(cs)
	return cs[len(cs)/2]
}

// TestCallGlare: alice and bob call each other at the same moment. Both
// wanted to talk, so they must end up in one call, the one with the lower
// ID, with audio both ways; the other ends as "glare". Whichever invite
// lands first, and whether they cross, the outcome is the same.
func TestCallGlare(t *testing.T) {
	sn := startSupernode(t)
	alice := startCallNode(t, initHome(t, "alice"), sn, nil)
	bob := startCallNode(t, initHome(t, "bob"), sn, nil)
	for round := range 3 {
		sinkA, sinkB := media.NewCaptureSink(0), media.NewCaptureSink(0)
		var calls [2]*Call
		var errs [2]error
		var wg sync.WaitGroup
		for i, n := range []*Node{alice, bob} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				peer, sink, tone := "bob", sinkA, 440.0
				if n == bob {
					peer, sink, tone = "alice", sinkB, 660
				}
				src, err := media.ToneSource(tone, 0.3)
				if err != nil {
					errs[i] = err
					return
				}
				calls[i], errs[i] = n.Call(context.Background(), peer, CallOptions{Source: src, Sink: sink})
			}()
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for _, s := range []*media.CaptureSink{sinkA, sinkB} {
			if err := s.Wait(ctx, media.SampleRate/2); err != nil {
				cancel()
				t.Fatalf("round %d: no audio both ways (alice called: %v %+v, bob called: %v %+v; alice is in %+v, bob in %+v): %v",
					round, errs[0], info(calls[0]), errs[1], info(calls[1]), info(alice.ActiveCall()), info(bob.ActiveCall()), err)
			}
		}
		cancel()
		// One call carries both: the lower ID survives, the other ended.
		a, b := alice.ActiveCall(), bob.ActiveCall()
		if a == nil || b == nil || a.ID() != b.ID() {
			t.Fatalf("round %d: alice in %+v, bob in %+v: want the same call", round, info(a), info(b))
		}
		for _, c := range calls {
			if c != nil && c.ID() != a.ID() {
				select {
				case <-c.Done():
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: the losing call %s never ended", round, c.ID())
				}
				if c.ID() < a.ID() {
					t.Errorf("round %d: call %s survived although %s is lower", round, a.ID(), c.ID())
				}
			}
		}
		a.Hangup()
		select {
		case <-b.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: bob's side did not end", round)
		}
	}
}

func info(c *Call) any {
	if c == nil {
		return nil
	}
	return c.Info()
}

// TestCallSignallingOutlivesIdle: a call whose signalling has nothing to
// say for longer than the idle timeout keeps its stream (the pings), so a
// hangup still travels on it and the other side hears "remote hung up",
// not just its media closing.
func TestCallSignallingOutlivesIdle(t *testing.T) {
	timings := CallTimings{LinkIdle: 1500 * time.Millisecond, KeepAlive: 300 * time.Millisecond}
	sn := startSupernode(t)
	sink := media.NewCaptureSink(0)
	alice := startCallNodeWith(t, initHome(t, "alice"), sn, nil, timings)
	bob := startCallNodeWith(t, initHome(t, "bob"), sn, func(CallInfo) (CallOptions, error) { return CallOptions{Sink: sink}, nil }, timings)
	c, err := alice.Call(context.Background(), "bob", CallOptions{Source: media.SpeechLikeSource(2)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Hangup()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Three idle timeouts of talking.
	if err := sink.Wait(ctx, media.SampleRate*9/2); err != nil {
		t.Fatal(err)
	}
	bc, err := bob.FindCall(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	bc.Hangup()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("caller's side did not end")
	}
	if r := c.Info().Reason; r != "remote hung up" {
		t.Fatalf("caller heard %q, want remote hung up (over the signalling stream)", r)
	}
}
