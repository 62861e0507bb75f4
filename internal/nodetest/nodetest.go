// Package nodetest is the toolkit parley's tests share: starting the
// parts of a test (Start, Loopback, Logger), waiting for a condition with
// a deadline instead of sleeping and hoping, and checking that a test
// leaves no goroutine behind (go.uber.org/goleak, like pion's
// test.CheckRoutines and tailscale's tstest.ResourceCheck).
//
// It imports no parley package, so the tests of every package can use it,
// the roles' own internal tests included. It must never be imported by
// non-test code.
package nodetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// poll is how often Eventually checks its condition: often enough that a
// wait costs little more than the event, seldom enough to cost nothing.
const poll = 10 * time.Millisecond

// Eventually waits until cond holds, checking it every few milliseconds,
// and fails t (naming what it waited for) if it does not within d. It
// returns how long the wait took, for a test that logs it.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(poll)
	}
	return time.Since(start)
}

// CheckLeaks fails t if goroutines started during it are still running
// after its cleanups (goleak waits a bounded while for them to finish).
// Call it first in the test, so its check runs after every other cleanup.
// opts are more goleak options, such as goleak.IgnoreTopFunction for a
// library's goroutine that outlives its objects by design.
func CheckLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	t.Cleanup(LeakCheck(t, opts...))
}

// LeakCheck returns a check that fails t if goroutines started between
// LeakCheck and the check are still running then (after goleak's bounded
// wait), for a test that checks at a point of its own rather than at the
// end (CheckLeaks).
func LeakCheck(t testing.TB, opts ...goleak.Option) (check func()) {
	t.Helper()
	opts = append([]goleak.Option{goleak.IgnoreCurrent()}, opts...)
	return func() {
		t.Helper()
		if err := goleak.Find(opts...); err != nil {
			t.Error(err)
		}
	}
}

// RunWithParley runs a package's tests (m) with *bin set to a parley binary
// built from this module's cmd/parley, or taken from the environment
// variable env when that is set, and exits with their result. When need is
// not nil and reports an error (a lab without root, say), the tests run
// without a binary: those that need one skip.
func RunWithParley(m *testing.M, env string, need func() error, bin *string) {
	if need != nil && need() != nil {
		os.Exit(m.Run())
	}
	if *bin = os.Getenv(env); *bin != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "parley-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "parley")
	if err := buildParley(*bin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildParley builds cmd/parley of the module the tests run in to bin.
func buildParley(bin string) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find the module: %w", err)
	}
	build := exec.Command("go", "build", "-o", bin, "./cmd/parley")
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build parley: %w\n%s", err, out)
	}
	return nil
}
