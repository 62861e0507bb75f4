package node

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/parley-net/parley/media"
)

// BenchmarkCallSetupNode measures a call's setup through the whole stack on
// loopback: from Call (resolve the handle, open the signalling stream, ring,
// auto-answer, ICE, DTLS) to the first audio frame decoded at the caller.
// Run with -benchtime=20x or more; it reports p50 and p95.
func BenchmarkCallSetupNode(b *testing.B) {
	sn := startSupernode(b)
	alice := startCallNode(b, initHome(b, "alice"), sn, nil)
	startCallNode(b, initHome(b, "bob"), sn, func(CallInfo) (CallOptions, error) {
		return CallOptions{Source: media.SpeechLikeSource(1)}, nil
	})
	ctx := context.Background()
	var setups []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := alice.Call(ctx, "bob", CallOptions{Source: media.SpeechLikeSource(2)})
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for c.Info().State != CallActive {
			if time.Now().After(deadline) {
				b.Fatalf("call %d never carried audio: %+v", i, c.Info())
			}
			time.Sleep(time.Millisecond)
		}
		setups = append(setups, c.Info().SetupMS)
		c.Hangup()
		<-c.Done()
	}
	b.StopTimer()
	sort.Float64s(setups)
	b.ReportMetric(setups[len(setups)/2], "p50-ms")
	b.ReportMetric(setups[(len(setups)*95+99)/100-1], "p95-ms")
}
