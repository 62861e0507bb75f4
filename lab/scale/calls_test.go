package scale

import (
	"context"
	"testing"
	"time"

	"github.com/parley-net/parley/node"
)

// One call, then two at once, direct and through the supernode's TURN
// relay: every call connects, goes the way it was told and each end hears
// the speech the other sends (not silence, not another call's). How well
// is not asserted: MOS and concealment are the machine's load
// (BENCHMARKS.md, "Many calls"); intact audio correlates about 0.97, a
// call on a machine at load 16 about 0.65, another seed's speech or
// silence under 0.3.
func TestCallsCarryAudio(t *testing.T) {
	for _, relay := range []string{"", node.PathSupernode} {
		t.Run("relay="+relay, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := RunCalls(ctx, CallsOptions{Levels: []int{1, 2}, Audio: 3 * time.Second, Relay: relay, MinMOS: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Levels) != 2 {
				t.Fatalf("%d levels ran, want 2: %+v", len(res.Levels), res)
			}
			for _, l := range res.Levels {
				if l.Connected != l.Calls || len(l.Errors) > 0 {
					t.Errorf("%d calls: %d connected: %v", l.Calls, l.Connected, l.Errors)
				}
				if l.Tiers[res.Relay] != l.Calls {
					t.Errorf("%d calls: tiers %v, want every call %s", l.Calls, l.Tiers, res.Relay)
				}
				if l.MinCorrelation < 0.5 && !raceEnabled {
					t.Errorf("%d calls: an end heard audio correlating %.3f with what was sent, want ≥ 0.5", l.Calls, l.MinCorrelation)
				}
			}
		})
	}
}
