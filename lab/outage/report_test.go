package outage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// syntheticReport is a sweep's worth of made-up events: every outcome a
// call and a message can have, in two topologies and two scenarios.
func syntheticReport(t *testing.T) *Report {
	wl := NewWorkload(7, WorkloadConfig{Devices: 6, Length: 30 * time.Second, CallRate: 16, CallMean: 10 * time.Second, MsgRate: 40, Offline: 1, GroupSize: 3})
	rep := &Report{Seed: 7, Out: t.TempDir(), Workload: wl, Command: "parley lab outage --seed 7",
		opts: Options{OutageAt: 10 * time.Second, Drain: 5 * time.Second, TimeScale: 1, Sites: 2, SupernodesPerSite: 1}}
	for ti, topo := range []Topology{P2P, Cloud} {
		for _, sc := range []string{None, "kakao-2022"} {
			res := &RunResult{Topology: topo, Scenario: sc, Length: wl.Length, Drain: 5 * time.Second}
			if sc != None {
				res.OutageStart, res.OutageEnd, res.Permanent = 10*time.Second, wl.Length, true
				res.Faults = []FaultEvent{{At: 10 * time.Second, What: "killed", Target: "sn-a1"}}
			}
			for i, c := range wl.Calls {
				ev := &CallEvent{Plan: c, Up: map[int]bool{}, GapMS: -1, Connected: i%3 != 2, SetupMS: float64(800 + 100*i)}
				ev.ActiveAt = c.Start + time.Second
				for s := int(ev.ActiveAt / time.Second); s < int((c.Start+c.Length)/time.Second); s++ {
					ev.Up[s] = ev.Connected && !(sc != None && topo == Cloud && s >= 10)
				}
				ev.Dropped = ev.Connected && sc != None && topo == Cloud && c.Start+c.Length > 10*time.Second
				if ev.Connected {
					ev.GapMS = float64(120 * (i + 1))
				}
				res.Calls = append(res.Calls, ev)
			}
			for i, m := range wl.Messages {
				ev := &MsgEvent{Plan: m, SentAt: m.At, Token: fmt.Sprintf("wl-%04d", m.ID)}
				for _, h := range wl.Recipients(m) {
					rc := &Receipt{Handle: h, Copies: 1, Outcome: "delivered", Delivered: true, LatencyMS: float64(5 + 40*i*(ti+1))}
					rc.ReceivedAt = m.At + time.Duration(rc.LatencyMS)*time.Millisecond
					switch {
					case sc != None && i%4 == 1:
						rc.Delivered, rc.Outcome, rc.Copies, rc.State = false, "lost", 0, "delivered"
					case sc != None && i%4 == 2:
						rc.Delivered, rc.Outcome, rc.Copies, rc.State = false, "pending", 0, "mailbox"
					case i == 3:
						rc.Copies = 2
					}
					ev.Recipients = append(ev.Recipients, rc)
				}
				res.Messages = append(res.Messages, ev)
			}
			res.summarize(wl, nil)
			rep.Runs = append(rep.Runs, res)
		}
	}
	return rep
}

// TestReportCountsAddUp: every message copy is delivered, lost or pending;
// calls connected and dropped are within those attempted; the timeline
// spans the run.
func TestReportCountsAddUp(t *testing.T) {
	rep := syntheticReport(t)
	for _, run := range rep.Runs {
		checkCounts(t, run)
	}
}

func checkCounts(t *testing.T, run *RunResult) {
	t.Helper()
	s := run.Summary
	name := string(run.Topology) + " × " + run.Scenario
	if s.Messages.Delivered+s.Messages.Lost+run.Pending != s.Messages.Sent {
		t.Errorf("%s: delivered %d + lost %d + pending %d != sent %d", name, s.Messages.Delivered, s.Messages.Lost, run.Pending, s.Messages.Sent)
	}
	copies := 0
	for _, m := range run.Messages {
		for _, rc := range m.Recipients {
			copies++
			if !slices.Contains([]string{"delivered", "lost", "pending"}, rc.Outcome) {
				t.Errorf("%s: message %d to %s has outcome %q", name, m.Plan.ID, rc.Handle, rc.Outcome)
			}
			if rc.Delivered != (rc.Outcome == "delivered") {
				t.Errorf("%s: message %d to %s: delivered=%v but outcome %q", name, m.Plan.ID, rc.Handle, rc.Delivered, rc.Outcome)
			}
		}
	}
	if copies != s.Messages.Sent {
		t.Errorf("%s: %d copies, %d sent", name, copies, s.Messages.Sent)
	}
	if s.Calls.Attempted != len(run.Calls) || s.Calls.Connected > s.Calls.Attempted || s.Calls.Dropped > s.Calls.Connected {
		t.Errorf("%s: calls attempted %d (events %d), connected %d, dropped %d", name, s.Calls.Attempted, len(run.Calls), s.Calls.Connected, s.Calls.Dropped)
	}
	if want := int((run.Length + run.Drain) / time.Second); len(run.Timeline) != want {
		t.Errorf("%s: timeline of %d s, want %d", name, len(run.Timeline), want)
	}
	for _, sec := range run.Timeline {
		if sec.CallsUp > sec.CallsExpected || sec.Overdue > sec.Pending || sec.Pending > s.Messages.Sent {
			t.Errorf("%s: second %d inconsistent: %+v", name, sec.T, sec)
		}
	}
}

func TestReportFiles(t *testing.T) {
	rep := syntheticReport(t)
	if err := rep.Write(); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, rep.Out, len(rep.Runs))
}

// checkFiles asserts the report's files: summary.json with exactly the
// issue's shape, the CSVs, and PNGs that decode and show something.
func checkFiles(t *testing.T, dir string, runs int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	var shape map[string]any
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	if got := keys(shape); !reflect.DeepEqual(got, []string{"out", "runs", "seed"}) {
		t.Errorf("summary.json keys %v", got)
	}
	rs, _ := shape["runs"].([]any)
	if len(rs) != runs {
		t.Fatalf("summary.json has %d runs, want %d", len(rs), runs)
	}
	for _, r := range rs {
		m := r.(map[string]any)
		if got := keys(m); !reflect.DeepEqual(got, []string{"calls", "messages", "recovery_s", "scenario", "topology"}) {
			t.Errorf("run keys %v", got)
		}
		if got := keys(m["calls"].(map[string]any)); !reflect.DeepEqual(got, []string{"attempted", "connected", "dropped", "gap_ms_p95", "setup_ms_p50", "setup_ms_p95"}) {
			t.Errorf("calls keys %v", got)
		}
		if got := keys(m["messages"].(map[string]any)); !reflect.DeepEqual(got, []string{"delivered", "duplicates", "latency_ms_p50", "latency_ms_p95", "lost", "sent"}) {
			t.Errorf("messages keys %v", got)
		}
	}
	for _, f := range []string{RunsFile, EventsFile, TimelineFile, ReportFile, WorkloadFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: missing or empty (%v)", f, err)
		}
	}
	pngs, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	var names []string
	for _, p := range pngs {
		names = append(names, filepath.Base(p))
	}
	for _, want := range []string{"setup-cdf.png", "latency-cdf.png", "losses.png", "availability-none.png"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s among %v", want, names)
		}
	}
	for _, p := range pngs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(p), err)
			continue
		}
		if n := colours(img); n < 3 {
			t.Errorf("%s: %d colours: nothing drawn", filepath.Base(p), n)
		}
		name := filepath.Base(p)
		if strings.HasPrefix(name, "availability-") && name != "availability-none.png" && !shaded(img) {
			t.Errorf("%s: no outage window shaded", name)
		}
	}
}

// shaded reports whether img holds the pale red of the outage window
// (outageShade over white).
func shaded(img image.Image) bool {
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, b, _ := img.At(x, y).RGBA()
			r, g, b = r>>8, g>>8, b>>8
			if r > 250 && g > 200 && g < 235 && b > 200 && b < 235 {
				return true
			}
		}
	}
	return false
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, b, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, b, a}] = true
		}
	}
	return len(seen)
}
