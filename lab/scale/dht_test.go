package scale

import (
	"context"
	"testing"
	"time"
)

// A small DHT of parley's own records resolves every handle to the right
// device, with servers leaving and joining while it does.
func TestDHTResolvesEveryHandle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := RunDHT(ctx, DHTOptions{Servers: 20, Devices: 10, Latency: time.Millisecond,
		Churn: 1, Duration: 4 * time.Second, Lookups: 20, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 10 || res.PublishFailed != 0 {
		t.Fatalf("published %d of 10: %v", res.Published, res.Failures)
	}
	if res.Resolved != res.Lookups || res.Lookups != 20 {
		t.Fatalf("resolved %d of %d lookups: %v", res.Resolved, res.Lookups, res.Failures)
	}
	if res.ServersLeft == 0 || res.ServersAdded != res.ServersLeft {
		t.Fatalf("churn: %d servers left, %d joined", res.ServersLeft, res.ServersAdded)
	}
	if res.Rounds.P50 < 1 || res.Messages.P50 < 1 {
		t.Fatalf("rounds %v, messages %v: the query trace saw nothing", res.Rounds, res.Messages)
	}
}

func TestDHTOptionsRefuseNonsense(t *testing.T) {
	for name, o := range map[string]DHTOptions{
		"one server":     {Servers: 1},
		"churn above 1":  {Servers: 10, Churn: 1.5},
		"negative count": {Servers: 10, Lookups: -1},
	} {
		if _, err := RunDHT(context.Background(), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
