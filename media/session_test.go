package media

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/nodetest"
)

// testLogger logs to the test's output at Warn and above, or everything
// with PARLEY_TEST_DEBUG=1.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PARLEY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// loopback restricts cfg to IPv4 loopback host candidates with mDNS off,
// which makes in-process calls fast and deterministic.
func loopback(t testing.TB, cfg Config) Config {
	cfg.IncludeLoopback = true
	cfg.IPFilter = func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil }
	cfg.NetworkTypes = []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	return cfg
}

// call is two Sessions in one process whose signalling runs through
// channels, as the libp2p stream would carry it.
type call struct {
	a, b *Session
	// aToB and bToA carry trickled candidates.
	aToB, bToA chan string
	stop       chan struct{}
	relays     chan struct{}
}

func newCall(t testing.TB, cfgA, cfgB Config) *call {
	t.Helper()
	a, err := NewSession(loopback(t, cfgA))
	if err != nil {
		t.Fatalf("NewSession(a): %v", err)
	}
	b, err := NewSession(loopback(t, cfgB))
	if err != nil {
		_ = a.Close()
		t.Fatalf("NewSession(b): %v", err)
	}
	c := &call{
		a: a, b: b,
		aToB:   make(chan string, 64),
		bToA:   make(chan string, 64),
		stop:   make(chan struct{}),
		relays: make(chan struct{}, 2),
	}
	a.OnLocalCandidate(func(s string) { c.send(c.aToB, s) })
	b.OnLocalCandidate(func(s string) { c.send(c.bToA, s) })
	go c.relay(t, c.aToB, b)
	go c.relay(t, c.bToA, a)
	return c
}

func (c *call) send(ch chan string, s string) {
	select {
	case ch <- s:
	case <-c.stop:
	}
}

func (c *call) relay(t testing.TB, ch chan string, to *Session) {
	defer func() { c.relays <- struct{}{} }()
	for {
		select {
		case <-c.stop:
			return
		case s := <-ch:
			if err := to.AddRemoteCandidate(s); err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("AddRemoteCandidate(%q): %v", s, err)
			}
		}
	}
}

// connect runs the offer/answer exchange, a offering.
func (c *call) connect(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offers, answers := make(chan string, 1), make(chan string, 1)
	offer, err := c.a.CreateOffer(ctx)
	if err != nil {
		t.Fatalf("CreateOffer: %v", err)
	}
	offers <- offer
	answer, err := c.b.Answer(ctx, <-offers)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	answers <- answer
	if err := c.a.SetAnswer(<-answers); err != nil {
		t.Fatalf("SetAnswer: %v", err)
	}
}

// close closes both sessions (first, then the other), waits for both to be
// done and stops the signalling goroutines.
func (c *call) close(t testing.TB, first *Session) {
	t.Helper()
	if err := first.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	other := c.b
	if first == c.b {
		other = c.a
	}
	select {
	case <-other.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("peer not done 10s after the other side closed")
		_ = other.Close()
	}
	close(c.stop)
	<-c.relays
	<-c.relays
}

func waitClosed(t testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// realTime runs attempt up to three times while the machine is too loaded
// for a real-time call, which attempt reports as a count of timing
// disturbances (see disturbances). The last attempt's result is returned
// for the caller to assert on.
func realTime[T any](t *testing.T, attempt func() (T, uint64)) T {
	t.Helper()
	for i := 1; ; i++ {
		r, n := attempt()
		if n == 0 || i == 3 {
			return r
		}
		t.Logf("attempt %d: %d timing disturbances; the machine is too loaded to keep real time; retrying", i, n)
	}
}

// disturbances counts signs that a call on an idle in-process network was
// disturbed by CPU starvation rather than by the network: frames skipped
// because a loop fell 200 ms behind, packets arriving after their playout
// time, frames dropped to cut delay, and comfort noise played for timestamp
// gaps (these tests send no DTX).
func disturbances(sts ...Stats) uint64 {
	var n uint64
	for _, st := range sts {
		n += st.FramesSkipped + st.PlayoutSkipped + uint64(st.LatePackets) + uint64(st.Discarded) +
			uint64(st.Comfort/FrameDuration)
	}
	return n
}

type speechCallResult struct {
	sentA, sentB []int16 // what a and b sent
	capA, capB   []int16 // what a and b heard
	stA, stB     Stats
	statesA      []State
}

func TestCallLoopbackSpeech(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	const frames = 150 // 3 s

	r := realTime(t, func() (speechCallResult, uint64) {
		capA, capB := NewCaptureSink(0), NewCaptureSink(0)
		// A generous jitter buffer keeps scheduling hiccups on a busy
		// machine from shifting the audio mid-call.
		c := newCall(t,
			Config{Source: LimitSource(SpeechLikeSource(1), frames), Sink: capA, JitterStart: 100 * time.Millisecond},
			Config{Source: LimitSource(SpeechLikeSource(2), frames), Sink: capB, JitterStart: 100 * time.Millisecond, FEC: true},
		)
		states := make(chan State, 16)
		c.a.OnState(func(s State) { states <- s })
		c.connect(t)

		waitClosed(t, c.a.FirstAudio(), 10*time.Second, "first audio at a")
		waitClosed(t, c.b.FirstAudio(), 10*time.Second, "first audio at b")
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		// The whole signal plus jitter buffer and codec delay.
		want := frames*FrameSamples + SampleRate/2
		for _, cs := range []*CaptureSink{capA, capB} {
			if err := cs.Wait(ctx, want); err != nil {
				t.Fatal(err)
			}
		}
		r := speechCallResult{capA: capA.Samples(), capB: capB.Samples(), stA: c.a.Stats(), stB: c.b.Stats()}
		c.close(t, c.a)
		waitClosed(t, c.a.Done(), 5*time.Second, "a done")
		for len(states) > 0 || len(r.statesA) == 0 || r.statesA[len(r.statesA)-1] != StateClosed {
			select {
			case s := <-states:
				r.statesA = append(r.statesA, s)
			case <-time.After(5 * time.Second):
				t.Fatalf("states %v: no closed", r.statesA)
			}
		}
		return r, disturbances(r.stA, r.stB)
	})

	for _, tc := range []struct {
		name string
		seed uint64
		got  []int16
		st   Stats
	}{
		{"a->b", 1, r.capB, r.stB},
		{"b->a", 2, r.capA, r.stA},
	} {
		sent, err := ReadAll(LimitSource(SpeechLikeSource(tc.seed), frames), frames*FrameSamples)
		if err != nil {
			t.Fatal(err)
		}
		peak, lag := Correlation(sent, tc.got, SampleRate)
		seg, _ := segmentCorrelation(sent, tc.got, SampleRate, SampleRate/2, 4*FrameSamples)
		st := tc.st
		t.Logf("%s: correlation %.3f at lag %v (per 0.5 s segment %.3f); stats %+v", tc.name, peak, samplesDuration(lag), seg, st)
		if seg < 0.9 && !raceEnabled {
			t.Errorf("%s: correlation %.3f per segment (%.3f overall), want >= 0.9", tc.name, seg, peak)
		}
		if st.PacketsReceived < frames {
			t.Errorf("%s: %d packets received, want >= %d", tc.name, st.PacketsReceived, frames)
		}
		if st.Path.LocalType != "host" || st.Path.RemoteType != "host" || !strings.HasPrefix(st.Path.Local, "127.0.0.1:") {
			t.Errorf("%s: path %+v, want host/host on 127.0.0.1", tc.name, st.Path)
		}
		if st.LossPercent != 0 {
			t.Errorf("%s: loss %.1f%% on loopback", tc.name, st.LossPercent)
		}
		if st.MOS < 4 && !raceEnabled {
			t.Errorf("%s: MOS %.2f on loopback, want >= 4", tc.name, st.MOS)
		}
	}
	if r.statesA[0] != StateConnecting || !containsState(r.statesA, StateConnected) {
		t.Errorf("states %v, want connecting, connected, …, closed", r.statesA)
	}
}

func containsState(ss []State, s State) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestCloseReleasesEverything closes a connected call from either side and
// checks every goroutine is gone, including the other side's.
func TestCloseReleasesEverything(t *testing.T) {
	for _, side := range []string{"offerer", "answerer"} {
		t.Run(side, func(t *testing.T) {
			check := nodetest.LeakCheck(t)
			defer check()
			tone, err := ToneSource(440, 0.3)
			if err != nil {
				t.Fatal(err)
			}
			rec := &countingWriter{}
			c := newCall(t, Config{Source: tone, Recorder: rec}, Config{Source: SpeechLikeSource(3), DTX: true})
			c.connect(t)
			waitClosed(t, c.a.FirstAudio(), 10*time.Second, "first audio at a")
			waitClosed(t, c.b.FirstAudio(), 10*time.Second, "first audio at b")
			first := c.a
			if side == "answerer" {
				first = c.b
			}
			c.close(t, first)
			if err := c.a.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := c.a.CreateOffer(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("CreateOffer after Close: %v, want ErrClosed", err)
			}
			if rec.n == 0 {
				t.Errorf("recorder got nothing")
			}
		})
	}
}

// TestCloseBeforeConnect closes sessions that never connected.
func TestCloseBeforeConnect(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	s, err := NewSession(loopback(t, Config{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOffer(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s.Done(), time.Second, "done")
}

type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}

var _ io.Writer = (*countingWriter)(nil)

// TestRestartICE restarts ICE in the middle of a call: the call must stay
// up and audio keep flowing over the new credentials.
func TestRestartICE(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	c := newCall(t, Config{Source: SpeechLikeSource(8)}, Config{Source: SpeechLikeSource(9)})
	c.connect(t)
	waitClosed(t, c.b.FirstAudio(), 10*time.Second, "first audio at b")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A first restart whose offer is lost on the way: the next one offers
	// it again.
	lost, err := c.a.RestartICE(ctx)
	if err != nil {
		t.Fatalf("RestartICE: %v", err)
	}
	offer, err := c.a.RestartICE(ctx)
	if err != nil {
		t.Fatalf("RestartICE after an unanswered one: %v", err)
	}
	if sdpValue(t, offer, "a=ice-ufrag:") != sdpValue(t, lost, "a=ice-ufrag:") {
		t.Errorf("a second restart before an answer changed the credentials the peer may be answering")
	}
	oldUfrag, newUfrag := sdpValue(t, c.a.pc.CurrentLocalDescription().SDP, "a=ice-ufrag:"), sdpValue(t, offer, "a=ice-ufrag:")
	if oldUfrag == newUfrag {
		t.Errorf("restart offer keeps ICE ufrag %q", oldUfrag)
	}
	answer, err := c.b.Answer(ctx, offer)
	if err != nil {
		t.Fatalf("Answer(restart offer): %v", err)
	}
	if err := c.a.SetAnswer(answer); err != nil {
		t.Fatalf("SetAnswer(restart answer): %v", err)
	}
	// Audio keeps arriving: another second's worth of packets.
	before := c.b.Stats().PacketsReceived
	for c.b.Stats().PacketsReceived < before+50 {
		select {
		case <-ctx.Done():
			t.Fatalf("audio stopped after the ICE restart: %+v", c.b.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if st := c.a.State(); st != StateConnected {
		t.Errorf("state %v after restart, want connected", st)
	}
	c.close(t, c.b)
}

func sdpValue(t *testing.T, sdp, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(sdp, "\r\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
	t.Fatalf("no %q in SDP", prefix)
	return ""
}

func TestConfigRejects(t *testing.T) {
	turn := []webrtc.ICEServer{{URLs: []string{"turn:192.0.2.1:3478"}, Username: "u", Credential: "p"}}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"bitrate too low", Config{Bitrate: 100}},
		{"bitrate too high", Config{Bitrate: 1_000_000}},
		{"loss without FEC", Config{ExpectedLoss: 5}},
		{"loss above 100", Config{FEC: true, ExpectedLoss: 101}},
		{"jitter min above max", Config{JitterMin: 300 * time.Millisecond, JitterMax: 100 * time.Millisecond}},
		{"jitter max above 1 s", Config{JitterMax: 2 * time.Second}},
		{"negative jitter", Config{JitterStart: -time.Millisecond}},
		{"half a port range", Config{PortMin: 10000}},
		{"inverted port range", Config{PortMin: 20000, PortMax: 10000}},
		{"negative timeout", Config{FailedTimeout: -time.Second}},
		{"relay only without TURN", Config{RelayOnly: true, ICEServers: []webrtc.ICEServer{{URLs: []string{"stun:192.0.2.1:3478"}}}}},
		{"bad ICE server URL", Config{ICEServers: []webrtc.ICEServer{{URLs: []string{"http://example.com"}}}}},
		{"TURN without credentials", Config{ICEServers: []webrtc.ICEServer{{URLs: turn[0].URLs}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSession(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("NewSession accepted the config")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
	// Defaults are filled in, and a relay-only config with TURN is fine.
	cfg, err := Config{RelayOnly: true, ICEServers: turn}.normalized()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bitrate != 32000 || cfg.JitterMin != 20*time.Millisecond || cfg.JitterMax != 200*time.Millisecond ||
		cfg.JitterStart != 40*time.Millisecond || cfg.Source == nil || cfg.Sink == nil || cfg.Now == nil {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}
