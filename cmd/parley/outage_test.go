package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// whoisWithin polls `parley whois` until it answers, and says how long it took.
func whoisWithin(t *testing.T, home, handle string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		out, errOut, code := run(t, "--home", home, "whois", handle)
		if code == 0 {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("whois %s: no answer within %s: %s%s", handle, d, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// historyOnce waits until home's history with peer holds body exactly
// once, and fails on a duplicate.
func historyOnce(t *testing.T, home, with, body string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		h := mustRun(t, "--home", home, "chat", "history", with)
		switch c := strings.Count(h, body); {
		case c == 1:
			return
		case c > 1:
			t.Fatalf("%q delivered %d times:\n%s", body, c, h)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not delivered within %s:\n%s", body, d, h)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestOnlySupernodeRestarts is issue 10's "done when", with real processes:
// SIGKILL and restart the only supernode (same home) and whois answers
// within 10 s, and a message sent while it was down arrives; restart it
// with its disk wiped (its key kept: its address is what the daemons know)
// and whois answers within 10 s; a daemon whose --bootstrap is unreachable
// stays up, shows offline in `parley status`, takes `chat send` into the
// outbox and delivers it once the supernode starts.
func TestOnlySupernodeRestarts(t *testing.T) {
	root := t.TempDir()
	sp := newSuper(t, root, 0)
	startSuper(t, sp, nil)
	for _, h := range []string{"alice", "bob", "carol"} {
		mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
	}
	alice := startProc(t, daemonArgs(root+"/alice", []string{sp.addr})...)
	bob := startProc(t, daemonArgs(root+"/bob", []string{sp.addr})...)
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)
	whoisWithin(t, root+"/alice", "bob", 10*time.Second)

	sp.kill()
	mustRun(t, "--home", root+"/alice", "chat", "send", "bob", "sent while the supernode was down")
	startSuper(t, sp, nil)
	took := whoisWithin(t, root+"/alice", "bob", 10*time.Second)
	t.Logf("whois bob answers %s after the supernode's restart", took.Round(time.Millisecond))
	historyOnce(t, root+"/bob", "alice", "sent while the supernode was down", 10*time.Second)

	// Its disk wiped: records and mail gone, the key (its address) kept.
	sp.kill()
	ents, _ := os.ReadDir(sp.home)
	for _, e := range ents {
		if e.Name() != "supernode.key" {
			os.RemoveAll(filepath.Join(sp.home, e.Name()))
		}
	}
	startSuper(t, sp, nil)
	took = whoisWithin(t, root+"/alice", "bob", 10*time.Second)
	t.Logf("whois bob answers %s after the supernode came back wiped", took.Round(time.Millisecond))

	// carol met alice once, then starts while the supernode is down.
	carol := startProc(t, daemonArgs(root+"/carol", []string{sp.addr})...)
	carol.waitLine(t, "ready", 30*time.Second)
	mustRun(t, "--home", root+"/carol", "chat", "send", "alice", "hello from carol")
	carol.cmd.Process.Signal(os.Interrupt)
	<-carol.done
	sp.kill()
	carol = startProc(t, daemonArgs(root+"/carol", []string{sp.addr})...)
	carol.waitLine(t, "ready", 30*time.Second)
	st := mustRun(t, "--home", root+"/carol", "status")
	if !strings.Contains(st, "offline") || !strings.Contains(st, sp.listen) || strings.Contains(st, "<peer.ID") {
		t.Fatalf("status with the supernode down:\n%s", st)
	}
	out := mustRun(t, "--home", root+"/carol", "chat", "send", "alice", "queued while offline")
	if !strings.Contains(out, "queued for") {
		t.Fatalf("chat send while offline: %s", out)
	}
	startSuper(t, sp, nil)
	historyOnce(t, root+"/alice", "carol", "queued while offline", 20*time.Second)
	if st := mustRun(t, "--home", root+"/carol", "status"); !strings.Contains(st, "online") {
		t.Fatalf("status after the supernode's return:\n%s", st)
	}
}
