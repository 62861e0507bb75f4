package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
)

// TestSkype2010: ten supernodes and six devices; eight supernodes die at
// once (December 2010: a client bug took down a large share of the
// supernodes). Within 30 s every device resolves every handle and chats
// with every other, and three calls carry audio; the eight come back with wiped disks (new keys, new
// addresses: brand-new supernodes); nothing sent is lost or duplicated.
func TestSkype2010(t *testing.T) {
	if testing.Short() {
		t.Skip("ten supernodes and six devices: not in -short")
	}
	net := startSupernodes(t, 10)
	names := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	devs := make([]*Node, len(names))
	answer := func(CallInfo) (CallOptions, error) { return CallOptions{Source: media.SpeechLikeSource(1)}, nil }
	for i, h := range names {
		devs[i] = startNodeWith(t, Config{Home: initHome(t, h), Bootstrap: net.infos(),
			RetryInterval: 100 * time.Millisecond, BootstrapTimeout: 5 * time.Second,
			Media: loopbackMedia, AutoAnswer: answer})
	}
	ctx := context.Background()

	round := func(tag string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, len(names)*len(names))
		for i := range devs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for j := range names {
					if i != j {
						if _, err := devs[i].Send(ctx, names[j], fmt.Sprintf("%s %s>%s", tag, names[i], names[j])); err != nil {
							errs <- fmt.Errorf("%s sends to %s: %w", names[i], names[j], err)
						}
					}
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	// delivered waits until every device has every message of the rounds
	// in tags exactly once, and fails at once on a duplicate.
	delivered := func(d time.Duration, tags ...string) time.Duration {
		t.Helper()
		return nodetest.Eventually(t, d, fmt.Sprintf("rounds %v delivered", tags), func() bool {
			for j, dev := range devs {
				for i := range names {
					if i == j {
						continue
					}
					h, err := dev.History(ctx, names[i], 0)
					if err != nil {
						t.Fatal(err)
					}
					for _, tag := range tags {
						want := fmt.Sprintf("%s %s>%s", tag, names[i], names[j])
						c := 0
						for _, m := range h {
							if m.Body == want {
								c++
							}
						}
						if c > 1 {
							t.Fatalf("%s has %q %d times", names[j], want, c)
						}
						if c == 0 {
							return false
						}
					}
				}
			}
			return true
		})
	}
	round("before")
	delivered(30*time.Second, "before")

	for i := 0; i < 8; i++ {
		net.sns[i].Close()
		net.sns[i] = nil
	}
	crash := time.Now()
	for i, dev := range devs {
		for j, h := range names {
			if i == j {
				continue
			}
			if _, err := dev.Resolve(ctx, h); err != nil {
				t.Fatalf("%s resolves %s %s after the crash: %v", names[i], h, time.Since(crash).Round(time.Millisecond), err)
			}
		}
	}
	resolved := time.Since(crash)
	round("during")
	delivered(30*time.Second-time.Since(crash), "during")
	chatted := time.Since(crash)
	// Three calls at once, each device in one: every one carries audio.
	// Their state is read from the callers' events, never polled.
	var calls []*Call
	var evs []<-chan Event
	for i := 0; i < len(devs); i += 2 {
		ev, stop := devs[i].Subscribe()
		defer stop()
		evs = append(evs, ev)
		c, err := devs[i].Call(ctx, names[i+1], CallOptions{Source: media.SpeechLikeSource(2)})
		if err != nil {
			t.Fatalf("%s calls %s after the crash: %v", names[i], names[i+1], err)
		}
		calls = append(calls, c)
	}
	timeout := time.After(30*time.Second - time.Since(crash))
	for i, ev := range evs {
		for active := false; !active; {
			select {
			case e := <-ev:
				active = e.Type == "call" && e.Call != nil && e.Call.State == CallActive
			case <-timeout:
				t.Fatalf("%s's call to %s carries no audio 30 s after the crash", names[2*i], names[2*i+1])
			}
		}
	}
	for _, c := range calls {
		c.Hangup()
		<-c.Done()
	}
	t.Logf("8 of 10 supernodes gone: every handle resolved in %s, every message delivered %s and three calls up %s after the crash",
		resolved.Round(time.Millisecond), chatted.Round(time.Millisecond), time.Since(crash).Round(time.Millisecond))

	for i := 0; i < 8; i++ {
		net.homes[i] = t.TempDir()
		net.start(i)
	}
	back := time.Now()
	round("after")
	took := delivered(30*time.Second, "before", "during", "after")
	t.Logf("eight back with wiped disks: every round delivered %s after their return (last wait %s)", time.Since(back).Round(time.Millisecond), took.Round(time.Millisecond))
	for i, dev := range devs {
		st := dev.Status()
		if !st.Online {
			t.Fatalf("%s: %+v", names[i], st)
		}
		if strings.Contains(st.OfflineReason, "<peer.ID") {
			t.Fatal(st.OfflineReason)
		}
	}
}
