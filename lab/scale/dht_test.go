package scale

import (
	"context"
	"testing"
	"time"
)

// A small DHT of parley's own records resolves every handle, with a server
// replaced every few hundred milliseconds while it does.
func TestDHTResolvesEveryHandle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunDHT(ctx, DHTOptions{Servers: 40, Devices: 20, Latency: time.Millisecond,
		Churn: 0.5, Duration: 2 * time.Second, Lookups: 40, Parallel: 8})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 20 || res.PublishFailed != 0 {
		t.Fatalf("published %d of 20: %v", res.Published, res.Failures)
	}
	if res.Resolved != res.Lookups || res.Lookups != 40 {
		t.Fatalf("resolved %d of %d lookups: %v", res.Resolved, res.Lookups, res.Failures)
	}
	if res.ServersLeft == 0 || res.ServersAdded != res.ServersLeft {
		t.Fatalf("churn: %d servers left, %d joined", res.ServersLeft, res.ServersAdded)
	}
	if res.Rounds.P50 < 1 {
		t.Fatalf("lookups took %v rounds: the query trace saw nothing", res.Rounds)
	}
	t.Logf("%+v", res)
}
