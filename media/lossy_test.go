package media

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/nodetest"
)

// lossyNet is a pion virtual network (vnet) with two hosts, 192.0.2.1 and
// 192.0.2.2 (documentation addresses; nothing leaves the process), whose
// router drops every nth RTP packet from the first host to the second.
type lossyNet struct {
	router     *vnet.Router
	netA, netB *vnet.Net

	mu      sync.Mutex
	rtp     int
	dropped int
}

func newLossyNet(t *testing.T, every int) *lossyNet {
	t.Helper()
	r, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "192.0.2.0/24", LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	n := &lossyNet{router: r}
	for i, ip := range []string{"192.0.2.1", "192.0.2.2"} {
		nw, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.AddNet(nw); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			n.netA = nw
		} else {
			n.netB = nw
		}
	}
	r.AddChunkFilter(func(c vnet.Chunk) bool {
		b := c.UserData()
		// SRTP keeps the RTP header in clear (RFC 3711 §3.1): version 2
		// and our Opus payload type identify media among STUN, DTLS and
		// RTCP.
		isRTP := len(b) > 12 && b[0]>>6 == 2 && b[1]&0x7f == opusPayloadType
		if !isRTP || !strings.HasPrefix(c.SourceAddr().String(), "192.0.2.1:") {
			return true
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		n.rtp++
		if n.rtp%every == 0 {
			n.dropped++
			return false
		}
		return true
	})
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCallLossyNetwork runs calls over a virtual network that loses 10 % of
// the audio one way. With in-band FEC the lost frames must be rebuilt;
// without it they must be concealed and counted. Either way the loss must
// show in the statistics and the audio must still correlate.
func TestCallLossyNetwork(t *testing.T) {
	for _, tc := range []struct {
		name string
		fec  bool
	}{
		{"fec", true},
		{"concealment only", false},
	} {
		t.Run(tc.name, func(t *testing.T) { lossyCall(t, tc.fec) })
	}
}

type lossyResult struct {
	st      Stats
	heard   []int16
	dropped int
}

func lossyCall(t *testing.T, fec bool) {
	check := nodetest.LeakCheck(t)
	defer check()
	const frames = 150
	r := realTime(t, func() (lossyResult, uint64) {
		ln := newLossyNet(t, 10)
		defer func() {
			if err := ln.router.Stop(); err != nil {
				t.Errorf("router stop: %v", err)
			}
		}()
		vcfg := func(n *vnet.Net, c Config) Config {
			c.Net = n
			c.NetworkTypes = []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
			c.Logger = testLogger(t)
			return c
		}
		capB := NewCaptureSink(0)
		a, err := NewSession(vcfg(ln.netA, Config{Source: LimitSource(SpeechLikeSource(12), frames), FEC: fec}))
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewSession(vcfg(ln.netB, Config{Sink: capB, JitterStart: 100 * time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		a.OnLocalCandidate(func(c string) { _ = b.AddRemoteCandidate(c) })
		b.OnLocalCandidate(func(c string) { _ = a.AddRemoteCandidate(c) })
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		offer, err := a.CreateOffer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		answer, err := b.Answer(ctx, offer)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.SetAnswer(answer); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, b.FirstAudio(), 10*time.Second, "first audio at b")
		if err := capB.Wait(ctx, frames*FrameSamples+SampleRate/2); err != nil {
			t.Fatal(err)
		}
		r := lossyResult{st: b.Stats(), heard: capB.Samples()}
		skipped := disturbances(a.Stats(), r.st)
		ln.mu.Lock()
		r.dropped = ln.dropped
		ln.mu.Unlock()
		if err := a.Close(); err != nil {
			t.Error(err)
		}
		waitClosed(t, b.Done(), 10*time.Second, "b done after a closed")
		return r, skipped
	})

	st := r.st
	sent, err := ReadAll(LimitSource(SpeechLikeSource(12), frames), frames*FrameSamples)
	if err != nil {
		t.Fatal(err)
	}
	peak, lag := Correlation(sent, r.heard, SampleRate)
	t.Logf("dropped %d; correlation %.3f at lag %v; stats %+v", r.dropped, peak, samplesDuration(lag), st)
	if !strings.HasPrefix(st.Path.Local, "192.0.2.2:") {
		t.Errorf("path %+v not on the virtual network", st.Path)
	}
	if st.LossPercent < 5 || st.LossPercent > 15 {
		t.Errorf("loss %.1f%%, want about 10%%", st.LossPercent)
	}
	// The encoder adds FEC only to active speech, and loss continues in
	// the silence after it, so not every lost frame can be rebuilt.
	const someFrames = 5 * FrameDuration
	switch {
	case fec && st.FECRecovered < someFrames:
		t.Errorf("FEC rebuilt %v of %d lost frames", st.FECRecovered, r.dropped)
	case !fec && (st.FECRecovered != 0 || st.Concealed < someFrames):
		t.Errorf("without FEC: rebuilt %v, concealed %v of %d lost frames", st.FECRecovered, st.Concealed, r.dropped)
	}
	if st.MOS >= 4.4 || st.MOS < 3 {
		t.Errorf("MOS %.2f with 10%% loss", st.MOS)
	}
	seg, _ := segmentCorrelation(sent, r.heard, SampleRate, SampleRate/2, 4*FrameSamples)
	if want := map[bool]float64{true: 0.9, false: 0.8}[fec]; seg < want && !raceEnabled {
		t.Errorf("correlation %.3f per segment (%.3f overall) with 10%% loss (FEC %v), want >= %.2f", seg, peak, fec, want)
	}
}
