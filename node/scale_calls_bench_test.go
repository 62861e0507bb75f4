package node

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-net/parley/media"
)

// BenchmarkConcurrentCallsMOS places N calls at once between 2N daemons
// (real nodes, one supernode, 127.0.0.1) in this process, lets each carry
// 8 s of speech-like audio, and reports how many reached the caller's
// E-model MOS of 4 or more. N is each of PARLEY_SCALE_CALLS (default
// "5,10,20"); the largest N with every call at MOS ≥ 4 is what one machine
// carries. The figure is a lower bound whenever the machine is shared.
//
//	PARLEY_SCALE_CALLS=10,20,30 go test -run='^$' -bench=BenchmarkConcurrentCallsMOS -benchtime=1x ./node/
func BenchmarkConcurrentCallsMOS(b *testing.B) {
	levels := []int{5, 10, 20}
	if s := os.Getenv("PARLEY_SCALE_CALLS"); s != "" {
		levels = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("PARLEY_SCALE_CALLS: %q is not a positive number", f)
			}
			levels = append(levels, n)
		}
	}
	for _, n := range levels {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				good, mos := concurrentCalls(b, n)
				sort.Float64s(mos)
				b.ReportMetric(float64(good), "calls_mos4")
				if len(mos) > 0 {
					b.ReportMetric(mos[0], "min_mos")
					b.ReportMetric(mos[len(mos)/2], "p50_mos")
				}
			}
		})
	}
}

func concurrentCalls(b *testing.B, n int) (good int, mos []float64) {
	sn := startSupernode(b)
	type pair struct {
		caller *Node
		sink   *media.CaptureSink
	}
	ps := make([]*pair, n)
	for i := range ps {
		p := &pair{sink: media.NewCaptureSink(0)}
		sink := p.sink
		p.caller = startCallNode(b, initHome(b, fmt.Sprintf("caller%d", i)), sn, func(CallInfo) (CallOptions, error) {
			return CallOptions{Sink: sink, Source: media.SpeechLikeSource(uint64(1000 + i))}, nil
		})
		startCallNode(b, initHome(b, fmt.Sprintf("callee%d", i)), sn, func(CallInfo) (CallOptions, error) {
			return CallOptions{Source: media.SpeechLikeSource(uint64(i))}, nil
		})
		ps[i] = p
	}
	b.ResetTimer()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.caller.Call(context.Background(), fmt.Sprintf("callee%d", i), CallOptions{Source: media.SpeechLikeSource(uint64(1000 + i)), Sink: p.sink})
			if err != nil {
				b.Logf("call %d: %v", i, err)
				return
			}
			defer c.Hangup()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := p.sink.Wait(ctx, 8*media.SampleRate); err != nil {
				b.Logf("call %d: %v", i, err)
				return
			}
			st := c.Info().Stats
			if st == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			mos = append(mos, st.MOS)
			if st.MOS >= 4 {
				good++
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	return good, mos
}
