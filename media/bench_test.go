package media

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkCallSetup measures, on loopback, the time from CreateOffer to the
// answerer decoding its first audio frame: offer/answer and trickle through
// channels, ICE, DTLS, SRTP, the first Opus packet and the jitter buffer's
// initial 40 ms. It reports the median and 95th percentile over b.N calls
// (run with -benchtime=20x or more), and the CPU time a call costs per
// second of talk (both ends, measured once over a fixed 3 s call).
func BenchmarkCallSetup(b *testing.B) {
	setups := make([]time.Duration, 0, b.N)
	for range b.N {
		c := newCall(b, Config{Source: SpeechLikeSource(1)}, Config{Source: SpeechLikeSource(2)})
		start := time.Now()
		c.connect(b)
		select {
		case <-c.b.FirstAudio():
		case <-time.After(10 * time.Second):
			b.Fatal("no audio 10 s after CreateOffer")
		}
		setups = append(setups, time.Since(start))
		b.StopTimer()
		c.close(b, c.a)
		b.StartTimer()
	}
	slices.Sort(setups)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(setups[len(setups)/2]), "setup-p50-ms")
	b.ReportMetric(ms(setups[min(len(setups)-1, len(setups)*95/100)]), "setup-p95-ms")

	cpuOnce.Do(func() { cpuPerCallSecond = measureCallCPU(b, 3*time.Second) })
	if cpuPerCallSecond >= 0 {
		b.ReportMetric(cpuPerCallSecond, "cpu-ms/call-s")
	}
}

var (
	cpuOnce          sync.Once
	cpuPerCallSecond float64 = -1
)

// measureCallCPU runs one connected call for d, both sides sending the
// speech-like signal, and returns the process CPU time (user + system)
// spent per second of call, in milliseconds. It returns -1 where process
// CPU time cannot be read.
func measureCallCPU(b *testing.B, d time.Duration) float64 {
	c := newCall(b, Config{Source: SpeechLikeSource(3)}, Config{Source: SpeechLikeSource(4)})
	c.connect(b)
	waitClosed(b, c.a.FirstAudio(), 10*time.Second, "first audio at a")
	waitClosed(b, c.b.FirstAudio(), 10*time.Second, "first audio at b")
	before, ok := processCPU()
	t := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	<-ctx.Done()
	cancel()
	after, _ := processCPU()
	elapsed := time.Since(t)
	c.close(b, c.a)
	if !ok {
		return -1
	}
	return float64((after - before).Microseconds()) / 1000 / elapsed.Seconds()
}
