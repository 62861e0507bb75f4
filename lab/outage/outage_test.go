package outage

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/lab/netlab"
)

// parleyBin is the binary the lab runs: OUTAGE_BINARY, or else built once
// by TestMain when the lab is available. OUTAGE_DIR keeps the report,
// homes and logs there.
var parleyBin string

func TestMain(m *testing.M) {
	// Without the lab the lab test skips and the others run; OUTAGE_BINARY
	// names a binary built elsewhere.
	nodetest.RunWithParley(m, "OUTAGE_BINARY", netlab.Available, &parleyBin)
}

// TestQuick runs the quick sweep (OUTAGE_TOPOLOGIES and OUTAGE_SCENARIOS
// narrow it) and checks the lab's own correctness: every message is
// accounted for, counts add up, the files and plots are there. Of
// parley it asserts one thing, the design's promise: the p2p topology
// loses no message in the control run nor when a whole site is gone.
// Everything else the run finds is in its report, not a failure.
func TestQuick(t *testing.T) {
	if err := netlab.Available(); err != nil {
		t.Skipf("the outage lab needs root and the ip and nft commands: %v", err)
	}
	if testing.Short() {
		t.Skip("the outage lab takes minutes; not with -short")
	}
	out := os.Getenv("OUTAGE_DIR")
	if out == "" {
		out = t.TempDir()
	}
	opts := Options{Binary: parleyBin, Out: out, Seed: 1, Quick: true, Progress: testWriter{t}}
	var err error
	if s := os.Getenv("OUTAGE_TOPOLOGIES"); s != "" {
		if opts.Topologies, err = ParseTopologies(s); err != nil {
			t.Fatal(err)
		}
	}
	if s := os.Getenv("OUTAGE_SCENARIOS"); s != "" {
		if opts.Scenarios, err = ParseScenarios(s); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("quick sweep of %d runs in %s", len(rep.Runs), time.Since(start).Round(time.Second))
	if want := len(rep.opts.Topologies) * len(rep.opts.Scenarios); len(rep.Runs) != want {
		t.Fatalf("%d runs, want %d", len(rep.Runs), want)
	}
	for _, run := range rep.Runs {
		t.Log(run.line())
		checkCounts(t, run)
		if run.Summary.Messages.Sent == 0 || run.Summary.Calls.Attempted == 0 {
			t.Errorf("%s × %s: no workload ran", run.Topology, run.Scenario)
		}
		if run.Topology == P2P && (run.Scenario == None || run.Scenario == "kakao-2022") {
			for _, m := range run.Messages {
				for _, rc := range m.Recipients {
					if rc.Outcome == "lost" {
						t.Errorf("p2p × %s lost message %d %s → %s (sender's state %q, send error %q)",
							run.Scenario, m.Plan.ID, m.Plan.From, rc.Handle, rc.State, m.Error)
					}
				}
			}
		}
	}
	checkFiles(t, out, len(rep.Runs))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
