package outage

import (
	"reflect"
	"testing"
	"time"
)

func TestWorkloadReproducibleBySeed(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  WorkloadConfig
	}{
		{"default", WorkloadConfig{}},
		{"quick", WorkloadConfig{Devices: 6, Length: 30 * time.Second, CallRate: 16, CallMean: 10 * time.Second, MsgRate: 40, Offline: 1, GroupSize: 3}},
		{"no offline, no group", WorkloadConfig{Devices: 4, Offline: -1, GroupSize: -1, Mobile: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := NewWorkload(42, tc.cfg), NewWorkload(42, tc.cfg)
			if !reflect.DeepEqual(a, b) {
				t.Fatal("the same seed gave two workloads")
			}
			if c := NewWorkload(43, tc.cfg); reflect.DeepEqual(a.Calls, c.Calls) && reflect.DeepEqual(a.Messages, c.Messages) {
				t.Error("seeds 42 and 43 gave the same calls and messages")
			}
			if len(a.Calls) == 0 || len(a.Messages) == 0 {
				t.Fatalf("%d calls and %d messages: the workload is empty", len(a.Calls), len(a.Messages))
			}
			checkWorkload(t, a)
		})
	}
}

// checkWorkload asserts the workload's own rules: calls inside the run,
// a device in one call at a time and never while offline, no message from
// an offline device, group messages only from members.
func checkWorkload(t *testing.T, w *Workload) {
	t.Helper()
	for i, c := range w.Calls {
		if c.Caller == c.Callee || c.Start < 0 || c.Start+c.Length > w.Length || c.Length < 5*time.Second {
			t.Errorf("call %+v: bad parties or times", c)
		}
		for _, h := range []string{c.Caller, c.Callee} {
			if w.offlineDuring(h, c.Start, c.Start+c.Length) {
				t.Errorf("call %d: %s is offline during it", c.ID, h)
			}
		}
		for _, o := range w.Calls[:i] {
			overlap := c.Start < o.Start+o.Length+callGuard && o.Start < c.Start+c.Length+callGuard
			shared := c.Caller == o.Caller || c.Caller == o.Callee || c.Callee == o.Caller || c.Callee == o.Callee
			if overlap && shared {
				t.Errorf("calls %d and %d share a device at once", o.ID, c.ID)
			}
		}
	}
	for _, m := range w.Messages {
		if w.offlineDuring(m.From, m.At, m.At) {
			t.Errorf("message %d from %s while offline", m.ID, m.From)
		}
		if len(w.Recipients(m)) == 0 {
			t.Errorf("message %d has no recipient", m.ID)
		}
		for _, r := range w.Recipients(m) {
			if r == m.From {
				t.Errorf("message %d to its sender", m.ID)
			}
		}
	}
}

func TestScenariosValid(t *testing.T) {
	for _, s := range Scenarios {
		if err := s.check(); err != nil {
			t.Error(err)
		}
	}
	for _, n := range QuickScenarios {
		if _, err := ScenarioByName(n); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseScenarios("none,atlantis"); err == nil {
		t.Error("an unknown scenario was accepted")
	}
	s, _ := ScenarioByName("msn-2001")
	if from, to, perm := s.Window(20*time.Second, 90*time.Second, 1); from != 20*time.Second || to != 80*time.Second || perm {
		t.Errorf("msn-2001 window %s..%s permanent=%v, want 20s..80s", from, to, perm)
	}
}
