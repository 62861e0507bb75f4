package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSkype2010: ten supernodes and six devices; eight supernodes die at
// once (December 2010: a client bug took down a large share of the
// supernodes). Within 30 s every device resolves every handle and chats
// with every other; the eight come back with wiped disks (new keys, new
// addresses: brand-new supernodes); nothing sent is lost or duplicated.
// Calls are covered by the call tests, not repeated here.
func TestSkype2010(t *testing.T) {
	if testing.Short() {
		t.Skip("ten supernodes and six devices: not in -short")
	}
	net := startSupernodes(t, 10)
	names := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	devs := make([]*Node, len(names))
	for i, h := range names {
		devs[i] = startWith(t, initHome(t, h), net.infos())
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
		return waitFor(t, d, fmt.Sprintf("rounds %v delivered", tags), func() bool {
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
	t.Logf("8 of 10 supernodes gone: every handle resolved in %s, every message delivered %s after the crash",
		resolved.Round(time.Millisecond), time.Since(crash).Round(time.Millisecond))

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
