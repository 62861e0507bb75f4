package nodetest

import (
	"fmt"
	"strings"
	"testing"
)

// failingTB is a test that has failed: it keeps its cleanups and what it
// logs, for FailLogger's test.
type failingTB struct {
	testing.TB
	failed   bool
	cleanups []func()
	logged   strings.Builder
}

func (f *failingTB) Cleanup(fn func())            { f.cleanups = append(f.cleanups, fn) }
func (f *failingTB) Failed() bool                 { return f.failed }
func (f *failingTB) Logf(format string, a ...any) { fmt.Fprintf(&f.logged, format, a...) }
func (f *failingTB) Helper()                      {}

func (f *failingTB) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// TestFailLogger: the parts' records are printed, in order and named,
// when the test fails, and not when it passes; a flood keeps the newest
// records, whole lines.
func TestFailLogger(t *testing.T) {
	t.Setenv("PARLEY_TEST_DEBUG", "")
	for _, failed := range []bool{true, false} {
		tb := &failingTB{TB: t, failed: failed}
		a, b := FailLogger(tb, "alice"), FailLogger(tb, "bob")
		a.Info("first")
		b.Warn("second")
		a.Debug("not kept")
		if len(tb.cleanups) != 1 {
			t.Fatalf("%d cleanups for one test, want 1", len(tb.cleanups))
		}
		tb.end()
		got := tb.logged.String()
		if !failed {
			if got != "" {
				t.Errorf("a passing test printed %q", got)
			}
			continue
		}
		i, j := strings.Index(got, "part=alice"), strings.Index(got, "part=bob")
		if i < 0 || j < i || !strings.Contains(got, "msg=first") || !strings.Contains(got, "msg=second") || strings.Contains(got, "not kept") {
			t.Errorf("a failing test printed %q", got)
		}
	}

	tb := &failingTB{TB: t, failed: true}
	l := FailLogger(tb, "flood")
	for i := range 20000 {
		l.Info("record", "i", i)
	}
	tb.end()
	got := tb.logged.String()
	if !strings.Contains(got, "i=19999\n") || strings.Contains(got, "i=0\n") || len(got) > failLogBytes+200 {
		t.Errorf("flood: kept %d bytes, newest kept %v, oldest kept %v", len(got), strings.Contains(got, "i=19999\n"), strings.Contains(got, "i=0\n"))
	}
	if first, _, _ := strings.Cut(got[strings.Index(got, "\n")+1:], "\n"); !strings.HasPrefix(first, "time=") {
		t.Errorf("flood: the first record kept is cut: %q", first)
	}
}
