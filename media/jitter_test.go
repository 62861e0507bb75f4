package media

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// jbPkt is a packet in a jitter buffer scenario: sequence number, timestamp
// in frames, and arrival time in ms.
type jbPkt struct {
	seq      uint16
	tsFrames int
	arriveMs int
	noLBRR   bool // the packet carries no FEC data for its predecessor
}

// fakeOpus is a 20 ms SILK wideband packet whose body names its sequence
// number, so the test can tell which packet was played. Its first SILK
// byte has the LBRR flag (bit 6 for one 20 ms mono frame, RFC 6716
// §4.2.3) set unless noLBRR.
func fakeOpus(seq uint16, noLBRR bool) []byte {
	p := []byte{9 << 3, 0x40, 0, 0}
	if noLBRR {
		p[1] = 0
	}
	binary.BigEndian.PutUint16(p[2:], seq)
	return p
}

func seqOf(p []byte) int {
	if len(p) < 4 {
		return -1
	}
	return int(binary.BigEndian.Uint16(p[2:]))
}

// runJitter feeds pkts into a buffer and pops every 20 ms from time 0 to
// untilMs, returning each pop as "kind" or "kind:seq", skipping the initial
// waits.
func runJitter(cfg jitterConfig, pkts []jbPkt, untilMs int) ([]string, *jitterBuffer) {
	j := newJitterBuffer(cfg)
	t0 := time.Unix(1000, 0)
	pkts = slices.Clone(pkts)
	slices.SortStableFunc(pkts, func(a, b jbPkt) int { return a.arriveMs - b.arriveMs })
	var out []string
	next := 0
	for now := 0; now <= untilMs; now++ {
		for next < len(pkts) && pkts[next].arriveMs <= now {
			p := pkts[next]
			j.push(p.seq, uint32(p.tsFrames*FrameSamples), fakeOpus(p.seq, p.noLBRR), t0.Add(time.Duration(p.arriveMs)*time.Millisecond))
			next++
		}
		if now%20 != 10 { // pop in the middle of each 20 ms tick
			continue
		}
		kind, pkt := j.pop(t0.Add(time.Duration(now) * time.Millisecond))
		switch {
		case kind == playWait && len(out) == 0:
		case pkt != nil:
			out = append(out, fmt.Sprintf("%v:%d", kind, seqOf(pkt)))
		default:
			out = append(out, kind.String())
		}
	}
	return out, j
}

// steady returns n packets starting at seq0, one every 20 ms, each arriving
// delayMs after it was sent.
func steady(seq0 uint16, n, delayMs int) []jbPkt {
	var p []jbPkt
	for i := range n {
		p = append(p, jbPkt{seq: seq0 + uint16(i), tsFrames: i, arriveMs: i*20 + delayMs})
	}
	return p
}

func without(p []jbPkt, seqs ...uint16) []jbPkt {
	return slices.DeleteFunc(slices.Clone(p), func(x jbPkt) bool { return slices.Contains(seqs, x.seq) })
}

func defaultJitterConfig() jitterConfig {
	return jitterConfig{
		minDelay:   durationSamples(defaultJitterMin),
		maxDelay:   durationSamples(defaultJitterMax),
		startDelay: durationSamples(defaultJitterStart),
	}
}

func TestJitterBuffer(t *testing.T) {
	fec := defaultJitterConfig()
	fec.fec = true
	tests := []struct {
		name    string
		cfg     jitterConfig
		pkts    []jbPkt
		untilMs int
		// want is the prefix of playout decisions expected.
		want []string
		// check inspects the final counters.
		check func(t *testing.T, s jitterStats)
	}{
		{
			name:    "in order",
			cfg:     defaultJitterConfig(),
			pkts:    steady(100, 5, 5),
			untilMs: 140,
			want:    []string{"packet:100", "packet:101", "packet:102", "packet:103", "packet:104"},
			check: func(t *testing.T, s jitterStats) {
				if s.Played != 5 || s.Lost != 0 || s.ConcealedSamples != 0 {
					t.Errorf("played %d lost %d concealed %d", s.Played, s.Lost, s.ConcealedSamples)
				}
			},
		},
		{
			name: "reorder is undone",
			cfg:  defaultJitterConfig(),
			pkts: []jbPkt{
				{seq: 0, tsFrames: 0, arriveMs: 0},
				{seq: 2, tsFrames: 2, arriveMs: 40},
				{seq: 1, tsFrames: 1, arriveMs: 45},
				{seq: 4, tsFrames: 4, arriveMs: 80},
				{seq: 3, tsFrames: 3, arriveMs: 81},
			},
			untilMs: 150,
			want:    []string{"packet:0", "packet:1", "packet:2", "packet:3", "packet:4"},
			check: func(t *testing.T, s jitterStats) {
				if s.Lost != 0 || s.Late != 0 {
					t.Errorf("lost %d late %d, want 0", s.Lost, s.Late)
				}
			},
		},
		{
			name:    "loss is concealed and counted",
			cfg:     defaultJitterConfig(),
			pkts:    without(steady(0, 6, 5), 3),
			untilMs: 160,
			want:    []string{"packet:0", "packet:1", "packet:2", "conceal", "packet:4", "packet:5"},
			check: func(t *testing.T, s jitterStats) {
				if s.Lost != 1 || s.ConcealedSamples != FrameSamples || s.Expected-s.Received != 1 {
					t.Errorf("lost %d concealed %d expected-received %d", s.Lost, s.ConcealedSamples, s.Expected-s.Received)
				}
			},
		},
		{
			name:    "loss is rebuilt from the next packet's FEC",
			cfg:     fec,
			pkts:    without(steady(0, 6, 5), 3),
			untilMs: 160,
			want:    []string{"packet:0", "packet:1", "packet:2", "fec:4", "packet:4", "packet:5"},
			check: func(t *testing.T, s jitterStats) {
				if s.FECSamples != FrameSamples || s.ConcealedSamples != 0 {
					t.Errorf("fec %d concealed %d", s.FECSamples, s.ConcealedSamples)
				}
			},
		},
		{
			name: "loss is concealed when the next packet has no FEC data",
			cfg:  fec,
			pkts: func() []jbPkt {
				p := without(steady(0, 6, 5), 3)
				p[3].noLBRR = true // packet 4
				return p
			}(),
			untilMs: 160,
			want:    []string{"packet:0", "packet:1", "packet:2", "conceal", "packet:4", "packet:5"},
			check: func(t *testing.T, s jitterStats) {
				if s.FECSamples != 0 || s.ConcealedSamples != FrameSamples {
					t.Errorf("fec %d concealed %d", s.FECSamples, s.ConcealedSamples)
				}
			},
		},
		{
			name:    "burst loss: FEC only for the frame just before a packet",
			cfg:     fec,
			pkts:    without(steady(0, 8, 5), 3, 4),
			untilMs: 200,
			// Nothing is buffered when 3 is due (expand); when 4 is due, 5 is there.
			want: []string{"packet:0", "packet:1", "packet:2", "expand", "fec:5", "packet:5", "packet:6", "packet:7"},
			check: func(t *testing.T, s jitterStats) {
				if s.Lost != 2 || s.FECSamples != FrameSamples || s.ConcealedSamples != FrameSamples {
					t.Errorf("lost %d fec %d concealed %d", s.Lost, s.FECSamples, s.ConcealedSamples)
				}
			},
		},
		{
			name: "duplicate dropped",
			cfg:  defaultJitterConfig(),
			pkts: append(steady(0, 4, 5),
				jbPkt{seq: 1, tsFrames: 1, arriveMs: 26},
				jbPkt{seq: 0, tsFrames: 0, arriveMs: 90}), // after playout: late
			untilMs: 120,
			want:    []string{"packet:0", "packet:1", "packet:2", "packet:3"},
			check: func(t *testing.T, s jitterStats) {
				if s.Duplicate != 1 || s.Late != 1 || s.Played != 4 {
					t.Errorf("duplicate %d late %d played %d", s.Duplicate, s.Late, s.Played)
				}
			},
		},
		{
			name: "late packet dropped after its slot was concealed",
			cfg:  defaultJitterConfig(),
			pkts: append(without(steady(0, 6, 5), 2),
				jbPkt{seq: 2, tsFrames: 2, arriveMs: 120}),
			untilMs: 160,
			want:    []string{"packet:0", "packet:1", "conceal", "packet:3", "packet:4", "packet:5"},
			check: func(t *testing.T, s jitterStats) {
				if s.Late != 1 {
					t.Errorf("late %d, want 1", s.Late)
				}
			},
		},
		{
			name: "underrun expands, late packet is played and delay grows",
			cfg:  defaultJitterConfig(),
			pkts: []jbPkt{
				{seq: 0, tsFrames: 0, arriveMs: 0},
				{seq: 1, tsFrames: 1, arriveMs: 20},
				{seq: 2, tsFrames: 2, arriveMs: 125}, // due at 70: three slots late
				{seq: 3, tsFrames: 3, arriveMs: 126},
			},
			untilMs: 180,
			want:    []string{"packet:0", "packet:1", "expand", "expand", "expand", "packet:2", "packet:3"},
			check: func(t *testing.T, s jitterStats) {
				if s.ConcealedSamples != 3*FrameSamples || s.ComfortSamples != 0 || s.Lost != 0 {
					t.Errorf("concealed %d comfort %d lost %d, want 3 frames, 0, 0", s.ConcealedSamples, s.ComfortSamples, s.Lost)
				}
				if s.TargetSamples <= durationSamples(defaultJitterStart) {
					t.Errorf("target %v did not grow after an underrun", samplesDuration(s.TargetSamples))
				}
			},
		},
		{
			name: "DTX pause is comfort noise, not concealment",
			cfg:  defaultJitterConfig(),
			pkts: []jbPkt{
				{seq: 0, tsFrames: 0, arriveMs: 0},
				{seq: 1, tsFrames: 1, arriveMs: 20},
				// The sender stopped for 8 frames; sequence numbers stay contiguous.
				{seq: 2, tsFrames: 10, arriveMs: 200},
				{seq: 3, tsFrames: 11, arriveMs: 220},
			},
			untilMs: 300,
			// Playout runs ~30 ms behind the sender: seven expansions
			// until packet 2 arrives, then comfort noise until its time.
			want: []string{"packet:0", "packet:1",
				"expand", "expand", "expand", "expand", "expand", "expand", "expand", "comfort",
				"packet:2", "packet:3"},
			check: func(t *testing.T, s jitterStats) {
				if s.ConcealedSamples != 0 || s.ComfortSamples != 8*FrameSamples || s.Lost != 0 {
					t.Errorf("concealed %d comfort %d lost %d", s.ConcealedSamples, s.ComfortSamples, s.Lost)
				}
			},
		},
		{
			name: "DTX gap with the next packet already buffered",
			cfg:  defaultJitterConfig(),
			pkts: []jbPkt{
				{seq: 0, tsFrames: 0, arriveMs: 0},
				{seq: 1, tsFrames: 3, arriveMs: 1},
				{seq: 2, tsFrames: 4, arriveMs: 2},
			},
			untilMs: 120,
			want:    []string{"packet:0", "comfort", "comfort", "packet:1", "packet:2"},
		},
		{
			name:    "malformed packets are rejected",
			cfg:     defaultJitterConfig(),
			untilMs: 40,
			check: func(t *testing.T, _ jitterStats) {
				j := newJitterBuffer(defaultJitterConfig())
				now := time.Unix(0, 0)
				for _, p := range [][]byte{nil, {}, {0x03}, make([]byte, maxOpusPacket+1)} {
					if r := j.push(1, 0, p, now); r != pushMalformed {
						t.Errorf("push(%x…) = %v, want malformed", p[:min(len(p), 4)], r)
					}
				}
				if j.stats().Malformed != 4 || len(j.pkts) != 0 {
					t.Errorf("malformed %d, buffered %d", j.stats().Malformed, len(j.pkts))
				}
			},
		},
		{
			name:    "sequence number wraps",
			cfg:     defaultJitterConfig(),
			pkts:    steady(65533, 6, 5),
			untilMs: 160,
			want:    []string{"packet:65533", "packet:65534", "packet:65535", "packet:0", "packet:1", "packet:2"},
			check: func(t *testing.T, s jitterStats) {
				if s.Expected != 6 || s.Lost != 0 {
					t.Errorf("expected %d lost %d", s.Expected, s.Lost)
				}
			},
		},
		{
			name: "stream restart (sequence jump) resets",
			cfg:  defaultJitterConfig(),
			pkts: append(steady(0, 3, 5), jbPkt{seq: 30000, tsFrames: 90000, arriveMs: 65},
				jbPkt{seq: 30001, tsFrames: 90001, arriveMs: 85}, jbPkt{seq: 30002, tsFrames: 90002, arriveMs: 105}),
			untilMs: 200,
			check: func(t *testing.T, s jitterStats) {
				if s.Resets != 1 || s.Played < 5 {
					t.Errorf("resets %d played %d", s.Resets, s.Played)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, j := runJitter(tc.cfg, tc.pkts, tc.untilMs)
			if len(got) < len(tc.want) || !slices.Equal(got[:len(tc.want)], tc.want) {
				t.Errorf("playout\n got %s\nwant %s", strings.Join(got, " "), strings.Join(tc.want, " "))
			}
			if tc.check != nil {
				tc.check(t, j.stats())
			}
		})
	}
}

// TestJitterBufferBounded floods the buffer and checks it never holds more
// than its capacity nor, once playing, more than maxDelay of audio.
func TestJitterBufferBounded(t *testing.T) {
	cfg := defaultJitterConfig()
	j := newJitterBuffer(cfg)
	now := time.Unix(0, 0)
	for i := range 500 {
		j.push(uint16(i), uint32(i*FrameSamples), fakeOpus(uint16(i), false), now)
		if len(j.pkts) > jitterCapacity {
			t.Fatalf("%d packets buffered, capacity %d", len(j.pkts), jitterCapacity)
		}
	}
	if s := j.stats(); s.Overflow != 500-jitterCapacity {
		t.Errorf("overflow %d, want %d", s.Overflow, 500-jitterCapacity)
	}
	for range 3 {
		now = now.Add(FrameDuration)
		j.pop(now)
		if b := j.buffered(); b > cfg.maxDelay {
			t.Errorf("buffered %v after pop, max %v", samplesDuration(b), samplesDuration(cfg.maxDelay))
		}
	}
	if s := j.stats(); s.Discarded == 0 {
		t.Errorf("nothing discarded to bring the delay down")
	}
}

// TestJitterBufferAdapts checks the target delay follows measured jitter,
// stays within bounds, and decays back when the network calms down.
func TestJitterBufferAdapts(t *testing.T) {
	cfg := defaultJitterConfig()
	rng := rand.New(rand.NewPCG(1, 2))
	var calm, jittery []jbPkt
	const n = 750 // 15 s, longer than jitterBoostDecay
	for i := range n {
		calm = append(calm, jbPkt{seq: uint16(i), tsFrames: i, arriveMs: i*20 + 5})
		jittery = append(jittery, jbPkt{seq: uint16(i), tsFrames: i, arriveMs: i*20 + 5 + rng.IntN(60)})
	}
	_, jc := runJitter(cfg, calm, n*20)
	_, jj := runJitter(cfg, jittery, n*20)
	sc, sj := jc.stats(), jj.stats()
	t.Logf("calm: target %v jitter %v; jittery: target %v jitter %v late %d concealed %v",
		samplesDuration(sc.TargetSamples), samplesDuration(sc.JitterSamples),
		samplesDuration(sj.TargetSamples), samplesDuration(sj.JitterSamples), sj.Late, samplesDuration(sj.ConcealedSamples))
	if sj.TargetSamples <= sc.TargetSamples {
		t.Errorf("target with 0–60 ms jitter %v not above calm target %v",
			samplesDuration(sj.TargetSamples), samplesDuration(sc.TargetSamples))
	}
	if sj.TargetSamples > cfg.maxDelay || sc.TargetSamples < cfg.minDelay {
		t.Errorf("targets %v, %v outside [%v, %v]", samplesDuration(sc.TargetSamples), samplesDuration(sj.TargetSamples),
			samplesDuration(cfg.minDelay), samplesDuration(cfg.maxDelay))
	}
	// The calm stream's start delay (40 ms) decays to the minimum.
	if sc.TargetSamples != cfg.minDelay {
		t.Errorf("calm target %v after 15 s, want %v", samplesDuration(sc.TargetSamples), samplesDuration(cfg.minDelay))
	}
	// Adapting keeps most jittery packets in time: under 2 % concealed.
	if sj.ConcealedSamples > n/50*FrameSamples {
		t.Errorf("concealed %v of 15 s", samplesDuration(sj.ConcealedSamples))
	}
}

// TestJitterDeadPathCountsAsMissing: when packets stop for good (a path
// that died), the open gap counts as concealed and missing once it is
// longer than a DTX pause, so a call silent for seconds cannot look healthy.
func TestJitterDeadPathCountsAsMissing(t *testing.T) {
	var pkts []jbPkt
	for i := range 50 { // one second of audio, then nothing
		pkts = append(pkts, jbPkt{seq: uint16(i), tsFrames: i, arriveMs: 20 * i})
	}
	cfg := jitterConfig{minDelay: FrameSamples, maxDelay: 10 * FrameSamples, startDelay: 2 * FrameSamples}
	_, j := runJitter(cfg, pkts, 1500)
	if st := j.stats(); st.MissingSamples != 0 {
		t.Fatalf("half a second after the last packet (a DTX pause is up to 0.4 s): missing %d samples, want 0", st.MissingSamples)
	}
	_, j = runJitter(cfg, pkts, 4000)
	st := j.stats()
	missingMS := st.MissingSamples * 1000 / SampleRate
	if missingMS < 2800 || missingMS > 3100 {
		t.Fatalf("3 s after the last packet: missing %d ms, want about 3000", missingMS)
	}
	if st.ConcealedSamples < st.MissingSamples {
		t.Fatalf("concealed %d < missing %d: a dead path must count as concealed", st.ConcealedSamples, st.MissingSamples)
	}
}
