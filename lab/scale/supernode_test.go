package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-net/parley/supernode"
)

// A supernode sized for 10 devices holds 10, refuses 5 more without
// falling over, says so in its log, and keeps serving the 10.
func TestSupernodeRefusesPastItsCapacity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sn, err := supernode.New(ctx, supernode.Config{Home: filepath.Join(t.TempDir(), "sn"), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		MaxDevices: 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	target := fmt.Sprintf("%s/p2p/%s", sn.Host().Addrs()[0], sn.Host().ID())
	ctlR, ctlW := io.Pipe()
	repR, repW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- RunLoad(ctx, LoadOptions{Target: target, Devices: 10, Over: 5, NATed: 0.5, Parallel: 4, Control: ctlR, Report: repW})
		repW.Close()
	}()
	dec := json.NewDecoder(repR)
	var wave, over, check LoadReport
	if err := dec.Decode(&wave); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(ctlW, "go")
	if err := dec.Decode(&over); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(ctlW, "check")
	if err := dec.Decode(&check); err != nil {
		t.Fatal(err)
	}
	ctlW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if wave.Connected != 10 || wave.Published != 10 {
		t.Fatalf("first wave: %+v", wave)
	}
	if over.Connected != 0 || over.Refused != 5 {
		t.Fatalf("past the limit: %+v", over)
	}
	if check.Served != check.Asked || check.Asked != 10 {
		t.Fatalf("devices held before the refusals: %d of %d served: %v", check.Served, check.Asked, check.Errors)
	}
	if sn.Refused() < 5 {
		t.Fatalf("the supernode counted %d refusals", sn.Refused())
	}
}

// The load generators' shares add up to the devices asked for, however
// many generators there are.
func TestGeneratorShares(t *testing.T) {
	for _, n := range []int{0, 1, 7, 10000, 20001} {
		for k := 1; k <= 4; k++ {
			sum := 0
			for i := 0; i < k; i++ {
				sum += share(n, i, k)
			}
			if sum != n {
				t.Fatalf("%d devices over %d generators: shares add up to %d", n, k, sum)
			}
		}
	}
	if generatorsFor(1) < 1 {
		t.Fatal("no generator for one device")
	}
}
