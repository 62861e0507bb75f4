package media

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkCallCPU compares, in one run, the CPU a whole call costs with
// what its Opus codec alone costs (issue 12's target: at most 1.5×):
//
//   - codec: the same speech-like audio (pre-rendered, as in the call) encoded and decoded with the same
//     Opus settings (32 kbit/s, voice, mono, 20 ms frames), both ways (two
//     encoders and two decoders, as the two ends of a call run), as fast
//     as it goes;
//   - codec-paced: the same, but at a call's pace: each end, on its own
//     goroutine, encodes a frame every 20 ms and decodes the other's, for
//     as long as the call; a codec woken 50 times a second from a cold
//     cache costs more than one run back to back, and no call can avoid
//     that part;
//   - call: two Sessions on loopback, each sending that audio to the
//     other for callSeconds in real time, with everything a call does
//     (pacing, RTP, SRTP, DTLS, ICE consent, RTCP, RED, jitter buffer,
//     playout).
//
// Both are process CPU (user + system, getrusage) per second of audio,
// both ends together; the call's metrics x-codec and x-paced-codec are
// its ratios to the two references measured just before it. Run it with -benchtime=1x (each iteration is a
// whole call) and -count for spread; -cpuprofile with -bench
// 'BenchmarkCallCPU/call' profiles the call alone.
func BenchmarkCallCPU(b *testing.B) {
	const callLength = 5 * time.Second
	for _, noRED := range []bool{false, true} {
		name := "red"
		if noRED {
			name = "plain"
		}
		var codec float64
		b.Run("codec/"+name, func(b *testing.B) {
			for range b.N {
				// Six times the call's audio: a steadier figure for the
				// same cost per second.
				codec = codecCPU(b, 6*callLength)
			}
			b.ReportMetric(codec, "cpu-ms/call-s")
		})
		var paced float64
		b.Run("codec-paced/"+name, func(b *testing.B) {
			for range b.N {
				paced = pacedCodecCPU(b, callLength)
			}
			b.ReportMetric(paced, "cpu-ms/call-s")
		})
		b.Run("call/"+name, func(b *testing.B) {
			var call float64
			for range b.N {
				call = callCPU(b, callLength, noRED)
			}
			b.ReportMetric(call, "cpu-ms/call-s")
			if codec > 0 {
				b.ReportMetric(call/codec, "x-codec")
			}
			if paced > 0 {
				b.ReportMetric(call/paced, "x-paced-codec")
			}
		})
	}
}

// codecCPU encodes and decodes d of speech-like audio twice (both ends
// of a call) and returns the CPU milliseconds spent per second of audio.
func codecCPU(b *testing.B, d time.Duration) float64 {
	type end struct {
		enc *encoder
		dec *decoder
		src Source
	}
	var ends [2]end
	for i := range ends {
		enc, err := newEncoder(defaultBitrate, false, false, 0)
		if err != nil {
			b.Fatal(err)
		}
		dec, err := newDecoder()
		if err != nil {
			b.Fatal(err)
		}
		ends[i] = end{enc, dec, newLoopSource(b, uint64(3+i))}
	}
	frame := make([]int16, FrameSamples)
	pkt := make([]byte, maxOpusPacket)
	pcm := make([]int16, 0, maxDecodeSamples)
	frames := int(d / FrameDuration)
	before, ok := processCPU()
	for range frames {
		for i := range ends {
			e := &ends[i]
			if err := e.src.ReadFrame(frame); err != nil {
				b.Fatal(err)
			}
			n, err := e.enc.encode(frame, pkt)
			if err != nil {
				b.Fatal(err)
			}
			// The other end decodes it.
			other := &ends[1-i]
			if pcm, err = other.dec.decode(pcm[:0], pkt[:n]); err != nil {
				b.Fatal(err)
			}
		}
	}
	after, _ := processCPU()
	if !ok {
		b.Skip("no process CPU time on this platform")
	}
	return float64((after - before).Microseconds()) / 1000 / d.Seconds()
}

// pacedCodecCPU is codecCPU at a call's pace: each end, on its own
// goroutine, encodes a frame every 20 ms and the other end decodes it, for
// d of audio, nothing else. It is what the codec costs when, as in a call,
// it runs 50 times a second from a cold cache instead of back to back.
func pacedCodecCPU(b *testing.B, d time.Duration) float64 {
	type end struct {
		enc *encoder
		dec *decoder
		src Source
		pkt chan []byte
	}
	var ends [2]*end
	for i := range ends {
		enc, err := newEncoder(defaultBitrate, false, false, 0)
		if err != nil {
			b.Fatal(err)
		}
		dec, err := newDecoder()
		if err != nil {
			b.Fatal(err)
		}
		ends[i] = &end{enc, dec, newLoopSource(b, uint64(3+i)), make(chan []byte, 16)}
	}
	frames := int(d / FrameDuration)
	errs := make(chan error, 2)
	before, ok := processCPU()
	start := time.Now()
	for i, e := range ends {
		other := ends[1-i]
		go func() {
			frame := make([]int16, FrameSamples)
			pcm := make([]int16, 0, maxDecodeSamples)
			t := time.NewTicker(FrameDuration)
			defer t.Stop()
			for range frames {
				<-t.C
				if err := e.src.ReadFrame(frame); err != nil {
					errs <- err
					return
				}
				pkt := make([]byte, maxOpusPacket)
				n, err := e.enc.encode(frame, pkt)
				if err != nil {
					errs <- err
					return
				}
				other.pkt <- pkt[:n]
				// Decode what the other end sent, as a call's playout does.
				select {
				case in := <-e.pkt:
					if pcm, err = e.dec.decode(pcm[:0], in); err != nil {
						errs <- err
						return
					}
				default:
				}
			}
			errs <- nil
		}()
	}
	for range ends {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	after, _ := processCPU()
	elapsed := time.Since(start)
	if !ok {
		b.Skip("no process CPU time on this platform")
	}
	return float64((after - before).Microseconds()) / 1000 / elapsed.Seconds()
}

// callCPU runs one connected call for d, both sides sending the
// speech-like signal, and returns the process CPU milliseconds spent per
// second of call, setup excluded.
func callCPU(b *testing.B, d time.Duration, noRED bool) float64 {
	c := newCall(b, Config{Source: newLoopSource(b, 3), NoRED: noRED}, Config{Source: newLoopSource(b, 4), NoRED: noRED})
	c.connect(b)
	waitClosed(b, c.a.FirstAudio(), 10*time.Second, "first audio at a")
	waitClosed(b, c.b.FirstAudio(), 10*time.Second, "first audio at b")
	before, ok := processCPU()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	<-ctx.Done()
	cancel()
	after, _ := processCPU()
	elapsed := time.Since(start)
	stA, stB := c.a.Stats(), c.b.Stats()
	c.close(b, c.a)
	if !ok {
		b.Skip("no process CPU time on this platform")
	}
	if n := disturbances(stA, stB); n > 0 {
		b.Logf("%d timing disturbances: the machine is loaded", n)
	}
	if !noRED && (stA.REDFramesSent == 0 || stB.REDFramesSent == 0) {
		b.Fatalf("RED negotiated but not sent: %d and %d frames", stA.REDFramesSent, stB.REDFramesSent)
	}
	return float64((after - before).Microseconds()) / 1000 / elapsed.Seconds()
}

// loopSource plays pre-rendered audio in a loop, so that neither side of
// the comparison pays for synthesising the speech-like signal.
type loopSource struct {
	pcm []int16
	pos int
}

func newLoopSource(b *testing.B, seed uint64) *loopSource {
	pcm, err := ReadAll(SpeechLikeSource(seed), 10*SampleRate)
	if err != nil {
		b.Fatal(err)
	}
	return &loopSource{pcm: pcm}
}

func (l *loopSource) ReadFrame(frame []int16) error {
	for i := range frame {
		frame[i] = l.pcm[l.pos]
		l.pos = (l.pos + 1) % len(l.pcm)
	}
	return nil
}

// BenchmarkConcurrentCalls runs n calls at once on loopback (both ends of
// each in this process, so 2n sessions) for 10 s and reports the worst
// MOS estimate any end heard, the share of the audio concealed over all
// ends, the frames skipped because the process fell behind real time, and
// the process CPU used (ms per second: 2000 is both cores of a 2-core
// machine). One machine carrying one end of each call runs half the
// sessions, so n calls here load it like 2n calls there.
func BenchmarkConcurrentCalls(b *testing.B) {
	for _, n := range []int{10, 20, 30} {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) {
			for range b.N {
				concurrentCalls(b, n, 10*time.Second)
			}
		})
	}
}

func concurrentCalls(b *testing.B, n int, d time.Duration) {
	calls := make([]*call, n)
	for i := range calls {
		calls[i] = newCall(b, Config{Source: newLoopSource(b, uint64(2*i+3))}, Config{Source: newLoopSource(b, uint64(2*i+4))})
		calls[i].connect(b)
	}
	for _, c := range calls {
		waitClosed(b, c.a.FirstAudio(), 20*time.Second, "first audio at a")
		waitClosed(b, c.b.FirstAudio(), 20*time.Second, "first audio at b")
	}
	// Count from here: setup's concealment is not what a loaded machine
	// does to a call.
	base := make([]Stats, 0, 2*n)
	for _, c := range calls {
		base = append(base, c.a.Stats(), c.b.Stats())
	}
	before, _ := processCPU()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	<-ctx.Done()
	cancel()
	after, _ := processCPU()
	elapsed := time.Since(start)
	worstMOS := 5.0
	var concealed, played time.Duration
	var skipped uint64
	for i, c := range calls {
		for j, s := range []*Session{c.a, c.b} {
			st, b0 := s.Stats(), base[2*i+j]
			worstMOS = min(worstMOS, st.MOS)
			concealed += st.Concealed - b0.Concealed
			played += elapsed
			skipped += st.FramesSkipped - b0.FramesSkipped + st.PlayoutSkipped - b0.PlayoutSkipped
		}
	}
	for _, c := range calls {
		c.close(b, c.a)
	}
	b.ReportMetric(worstMOS, "worst-MOS")
	b.ReportMetric(100*float64(concealed)/float64(played), "concealed-%")
	b.ReportMetric(float64(skipped), "frames-skipped")
	b.ReportMetric(float64((after-before).Microseconds())/1000/elapsed.Seconds(), "cpu-ms/s")
}
