package guestcall

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
)

// fakePage stands in for the guest's browser page on one leg: its
// restart offers are "offer-N" (an error for the restarts in fail), and
// the answers it is given are sent on answers. The browser's own part is
// tested in Chromium (TestGuestCallSurvivesRelayLoss in ./node/); this
// drives the call's restart logic on a fake clock.
type fakePage struct {
	mu      sync.Mutex
	n       int
	fail    map[int]bool
	answers chan string
}

func (p *fakePage) SetAnswer(sdp string) error      { p.answers <- sdp; return nil }
func (p *fakePage) AddRemoteCandidate(string) error { return nil }
func (p *fakePage) Close() error                    { return nil }

func (p *fakePage) RestartICE(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.fail[p.n] {
		return "", errors.New("the page did not answer")
	}
	return fmt.Sprintf("offer-%d", p.n), nil
}

// answeredGuestCall is a guest call whose only device has answered, run on
// clk until it ends (ended closes; err is run's error).
type answeredGuestCall struct {
	c      *guestCall
	l      *glink
	page   *fakePage
	clk    *clock.Fake
	ended  chan struct{}
	err    error
	mu     sync.Mutex
	status []string
}

func startAnsweredGuestCall(t *testing.T, fail ...int) *answeredGuestCall {
	t.Helper()
	a := &answeredGuestCall{clk: clock.NewFake(time.Unix(1_700_000_000, 0)), ended: make(chan struct{}),
		page: &fakePage{fail: map[int]bool{}, answers: make(chan string, 16)}}
	for _, n := range fail {
		a.page.fail[n] = true
	}
	a.l = &glink{device: "device", session: a.page, out: make(chan guestFrame, 256), quit: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	a.c = &guestCall{id: "0a", clk: a.clk, events: make(chan any, 256), done: make(chan struct{}),
		legs: map[peer.ID]*glink{a.l.device: a.l}, ctx: ctx,
		gc: browser.GuestCall{Status: func(state, reason string) {
			a.mu.Lock()
			a.status = append(a.status, state+": "+reason)
			a.mu.Unlock()
		}}}
	a.c.winner = a.l
	go func() {
		defer close(a.ended)
		a.err = a.c.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-a.ended
		close(a.c.done)
		a.c.wg.Wait()
	})
	nodetest.Eventually(t, 5*time.Second, "the ring timer armed", func() bool { return a.clk.Pending() == 1 })
	return a
}

// media reports the leg's media state and waits until the call has taken
// it: a restart timer armed (pending timers, the ring's included, reach
// want) or stopped.
func (a *answeredGuestCall) media(t *testing.T, st media.State, want int) {
	t.Helper()
	a.c.post(evGuestState{l: a.l, st: st})
	nodetest.Eventually(t, 5*time.Second, fmt.Sprintf("%d timers pending after %v", want, st),
		func() bool { return a.clk.Pending() == want })
}

// within returns the next value on ch, failing t after 5 s without one.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5 s", what)
		var zero T
		return zero
	}
}

// next returns the next frame the call sends the device.
func (a *answeredGuestCall) next(t *testing.T) guestFrame {
	t.Helper()
	return within(t, a.l.out, "frame to the device")
}

// restart advances the clock by d and expects restart number n, offer sdp.
func (a *answeredGuestCall) restart(t *testing.T, d time.Duration, n uint32) {
	t.Helper()
	a.clk.Advance(d)
	f := a.next(t)
	if f.Type != "restart" || f.Restart != n || f.SDP != fmt.Sprintf("offer-%d", n) {
		t.Fatalf("after %s: sent %+v, want restart %d", d, f, n)
	}
}

func (a *answeredGuestCall) answer(n uint32) {
	a.c.post(evGuestFrame{l: a.l, f: &guestFrame{Type: "restart-answer", Call: "0a", Restart: n, SDP: fmt.Sprintf("answer-%d", n)}})
}

// applied returns the next answer the call gives the page.
func (a *answeredGuestCall) applied(t *testing.T) string {
	t.Helper()
	return within(t, a.page.answers, "answer given to the page")
}

// TestGuestCallRestartsICE: when the winner's media goes, the call asks
// the page for a restart offer after guestRestartAfter and sends it to the
// device; the device's answer reaches the page, a stale one does not; a
// restart that does not connect is followed by another every
// guestRestartRetry; media that connects resets the count; and after
// guestMaxFailedRestarts in a row the call ends on both sides.
func TestGuestCallRestartsICE(t *testing.T) {
	a := startAnsweredGuestCall(t, 4)

	a.media(t, media.StateDisconnected, 2)
	a.restart(t, guestRestartAfter, 1)
	a.answer(1)
	if got := a.applied(t); got != "answer-1" {
		t.Fatalf("the page got %q, want answer-1", got)
	}
	a.restart(t, guestRestartRetry, 2) // restart 1 did not connect
	a.answer(1)                        // stale: restart 2 replaced it
	a.answer(2)
	if got := a.applied(t); got != "answer-2" {
		t.Fatalf("the page got %q, want answer-2 (the stale answer-1 must be ignored)", got)
	}
	a.media(t, media.StateConnected, 1) // the retry timer stopped

	// Media goes again: the count starts afresh. The page fails to make
	// restart 4's offer; the timer tries again.
	a.media(t, media.StateDisconnected, 2)
	a.restart(t, guestRestartAfter, 3)
	a.clk.Advance(guestRestartRetry)
	nodetest.Eventually(t, 5*time.Second, "the page told its restart offer failed", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return strings.Contains(strings.Join(a.status, "\n"), "reconnecting failed: the page did not answer")
	})
	a.restart(t, guestRestartRetry, 5)
	a.restart(t, guestRestartRetry, 6)
	a.restart(t, guestRestartRetry, 7)

	// Five restarts in a row did not connect: the next one due ends it.
	a.clk.Advance(guestRestartRetry)
	if f := a.next(t); f.Type != "hangup" || f.Reason != "no media path" {
		t.Fatalf("sent %+v, want hangup: no media path", f)
	}
	within(t, a.ended, "end of the call")
	if a.err == nil || !strings.Contains(a.err.Error(), "media path failed") {
		t.Fatalf("the call ended with %v", a.err)
	}
}
