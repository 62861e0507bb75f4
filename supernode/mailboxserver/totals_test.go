package mailboxserver

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/mailbox"
)

// totalsOf lists the rows q gives (kind, key, n, bytes), sorted.
func totalsOf(t *testing.T, s *Server, q string) []string {
	t.Helper()
	rows, err := s.db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var kind string
		var key []byte
		var n, b int64
		if err := rows.Scan(&kind, &key, &n, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %x n=%d bytes=%d", kind, key, n, b))
	}
	sort.Strings(out)
	return out
}

// checkTotals fails unless the running totals are what the envelopes add
// up to.
func checkTotals(t *testing.T, s *Server) {
	t.Helper()
	got := totalsOf(t, s, `SELECT kind, key, n, bytes FROM totals`)
	want := totalsOf(t, s, totalsFromItems)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("running totals:\n%s\nbut the envelopes add up to:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A mailbox's running totals (what its quotas read) stay what the
// envelopes add up to through deposits, refusals, duplicates, deliveries
// and expiry.
func TestTotalsFollowTheEnvelopes(t *testing.T) {
	now := time.Now()
	s, _ := newMailbox(t, Config{MaxPerRecipientSrc: 3, Now: func() time.Time { return now }})
	to, other, from := newRandomPeer(t), newRandomPeer(t), newRandomPeer(t)
	var items []mailbox.Item
	for i := 0; i < 6; i++ {
		it := item(fmt.Sprintf("i%d", i), to, from)
		it.Env = make([]byte, 10+i)
		items = append(items, it)
	}
	items = append(items, items[0]) // a duplicate is kept once
	errs := s.Load("10.0.0.1", items)
	if errs[2] != nil || errs[3] == nil { // the prefix's share of `to` is 3
		t.Fatalf("load: %v", errs)
	}
	checkTotals(t, s)
	short := item("s1", other, from)
	short.ExpiresMS = now.Add(time.Minute).UnixMilli()
	if errs := s.Load("10.0.1.7", []mailbox.Item{short, item("s2", other, from)}); errs[0] != nil || errs[1] != nil {
		t.Fatalf("load: %v", errs)
	}
	checkTotals(t, s)
	if err := s.remove(to.String(), []string{"i0", "i2", "nothing"}); err != nil {
		t.Fatal(err)
	}
	checkTotals(t, s)
	if n, _ := s.Count(); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	now = now.Add(2 * time.Minute)
	if _, err := s.db.Exec(`DELETE FROM items WHERE expires_ms <= ?`, now.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	checkTotals(t, s)
	// Freed room is room again: the prefix's share of `to` takes two more.
	if errs := s.Load("10.0.0.9", []mailbox.Item{item("j1", to, from), item("j2", to, from), item("j3", to, from)}); errs[0] != nil || errs[1] != nil || errs[2] == nil {
		t.Fatalf("load after delivery: %v", errs)
	}
	checkTotals(t, s)
}

// The totals survive a crash: a mailbox killed (SIGKILL) in the middle of
// storing and delivering reopens with totals that match its envelopes.
func TestTotalsSurviveSIGKILL(t *testing.T) {
	if dir := os.Getenv("PARLEY_TOTALS_CHILD"); dir != "" {
		totalsChild(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTotalsSurviveSIGKILL$", "-test.v")
	cmd.Env = append(os.Environ(), "PARLEY_TOTALS_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(3 * time.Minute) // generous: -race on a loaded machine
	for batches := 0; batches < 10; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the mailbox process ended before it was killed")
			}
			if strings.HasPrefix(l, "committed ") {
				batches++
			} else {
				t.Log(l)
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatal("the mailbox process committed fewer than 10 batches in 3 minutes")
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err = cmd.Wait()
	go func() {
		for range lines {
		}
	}()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the mailbox process was not killed: %v", err)
	}
	h := newHost(t)
	s, err := NewServer(Config{Home: dir, Host: h, Logger: quietLog(),
		Closest:     func(context.Context, string, int) ([]peer.ID, error) { return []peer.ID{h.ID()}, nil },
		IsSupernode: func(peer.ID) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, _ := s.Count(); n == 0 {
		t.Fatal("nothing was stored before the kill")
	}
	checkTotals(t, s)
}

// totalsChild stores and delivers envelopes until it is killed, saying
// after each commit how far it got.
func totalsChild(t *testing.T, dir string) {
	h := newHost(t)
	s, err := NewServer(Config{Home: dir, Host: h, Logger: quietLog(), MaxPerRecipientSrc: 1 << 20, MaxPerRecipient: 1 << 20, MaxPerSender: 1 << 20,
		Closest:     func(context.Context, string, int) ([]peer.ID, error) { return []peer.ID{h.ID()}, nil },
		IsSupernode: func(peer.ID) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	devs := []peer.ID{newRandomPeer(t), newRandomPeer(t), newRandomPeer(t)}
	from := newRandomPeer(t)
	for b := 0; b < 100_000; b++ { // bounded: the parent kills it long before
		var items []mailbox.Item
		for i := 0; i < 60; i++ {
			it := item(fmt.Sprintf("b%d-%d", b, i), devs[i%3], from)
			it.Env = make([]byte, 1+i)
			items = append(items, it)
		}
		src := fmt.Sprintf("10.0.%d.1", b%4)
		for _, err := range s.Load(src, items) {
			if err != nil {
				t.Fatal(err)
			}
		}
		if b%2 == 1 {
			var ids []string
			for i := 0; i < 60; i += 3 {
				ids = append(ids, fmt.Sprintf("b%d-%d", b-1, i))
			}
			if err := s.remove(devs[0].String(), ids); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Printf("committed %d\n", b)
	}
}

// BenchmarkLoad stores envelopes 5,000 a transaction: the scale lab's
// preload, per envelope.
func BenchmarkLoad(b *testing.B) {
	h, err := libp2pHost()
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	s, err := NewServer(Config{Home: b.TempDir(), Host: h, Logger: quietLog(), MaxPerSender: 1 << 30, MaxPerRecipientSrc: 1 << 30, MaxPerRecipient: 1 << 30,
		MaxBytes: 1 << 40, MaxBytesPerIP: 1 << 40, MaxBytesPerPrefix: 1 << 40, MaxBytesPerRecipientSrc: 1 << 40,
		Closest:     func(context.Context, string, int) ([]peer.ID, error) { return []peer.ID{h.ID()}, nil },
		IsSupernode: func(peer.ID) bool { return false }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	to, from := h.ID(), h.ID()
	env := make([]byte, 512)
	b.ResetTimer()
	for done := 0; done < b.N; {
		var items []mailbox.Item
		for i := 0; i < 5000 && done < b.N; i++ {
			it := item(fmt.Sprintf("e%09d", done), to, from)
			it.Env = env
			items = append(items, it)
			done++
		}
		for _, err := range s.Load("127.0.0.1", items) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func libp2pHost() (host.Host, error) {
	return libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
}

// A mailbox made before the running totals gets them, from its envelopes,
// when it is opened.
func TestTotalsMadeForAnOlderMailbox(t *testing.T) {
	h := newHost(t)
	cfg := Config{Home: t.TempDir(), Host: h, Logger: quietLog(),
		Closest:     func(context.Context, string, int) ([]peer.ID, error) { return []peer.ID{h.ID()}, nil },
		IsSupernode: func(peer.ID) bool { return false }}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	to, from := newRandomPeer(t), newRandomPeer(t)
	s.Load("10.0.0.1", []mailbox.Item{item("a", to, from), item("b", to, from)})
	s.Load("10.9.0.1", []mailbox.Item{item("c", from, to)})
	if _, err := s.db.Exec(`DROP TRIGGER items_totals_insert; DROP TRIGGER items_totals_delete; DROP TABLE totals`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = NewServer(cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, _ := s.Count(); n != 3 {
		t.Fatalf("count %d after reopening, want 3", n)
	}
	checkTotals(t, s)
}
