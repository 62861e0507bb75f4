package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
)

// superProc is a supernode process on fixed ports, so it can be killed and
// come back at the same address.
type superProc struct {
	home, listen, metrics string
	p                     *proc
	addr                  string
}

func startSuper(t *testing.T, sp *superProc, boot []string) {
	t.Helper()
	args := []string{"--home", sp.home, "supernode", "--stun", "", "--listen", sp.listen, "--metrics", sp.metrics}
	for _, b := range boot {
		args = append(args, "--bootstrap", b)
	}
	sp.p = startProc(t, args...)
	sp.addr = strings.TrimSpace(sp.p.waitLine(t, "/p2p/", 30*time.Second))
	sp.p.waitLine(t, "metrics:", 10*time.Second)
}

func (sp *superProc) kill() {
	sp.p.cmd.Process.Signal(syscall.SIGKILL)
	<-sp.p.done
}

var mailboxGauge = regexp.MustCompile(`(?m)^parley_mailbox_envelopes (\d+)`)

func (sp *superProc) envelopes(t *testing.T) int {
	resp, err := http.Get("http://" + sp.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := mailboxGauge.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no mailbox gauge in metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func newSuper(t *testing.T, root string, i int) *superProc {
	return &superProc{home: fmt.Sprintf("%s/sn%d", root, i), listen: fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", nodetest.FixedPort(t, "127.0.0.1")),
		metrics: fmt.Sprintf("127.0.0.1:%d", nodetest.FixedPort(t, "127.0.0.1"))}
}

func daemonArgs(home string, boots []string) []string {
	args := []string{"--home", home, "daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", strings.Join(boots, ",")}
	return args
}

// TestSenderKilledAfterSend: chat send returns once the message is in the
// outbox; the daemon is SIGKILLed at once; after a restart the message
// reaches bob, once.
func TestSenderKilledAfterSend(t *testing.T) {
	root := t.TempDir()
	sp := newSuper(t, root, 0)
	startSuper(t, sp, nil)
	for _, h := range []string{"alice", "bob"} {
		mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
	}
	alice := startProc(t, daemonArgs(root+"/alice", []string{sp.addr})...)
	bob := startProc(t, daemonArgs(root+"/bob", []string{sp.addr})...)
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)
	mustRun(t, "--home", root+"/alice", "chat", "send", "bob", "warm-up")

	// Nothing can take the message now: bob and the only supernode are gone.
	bob.cmd.Process.Signal(syscall.SIGKILL)
	<-bob.done
	sp.kill()
	out := mustRun(t, "--home", root+"/alice", "chat", "send", "bob", "survives a crash")
	if !strings.Contains(out, "queued for 1") {
		t.Fatalf("send with nobody reachable: %s", out)
	}
	alice.cmd.Process.Signal(syscall.SIGKILL)
	<-alice.done

	startSuper(t, sp, nil)
	bob = startProc(t, daemonArgs(root+"/bob", []string{sp.addr})...)
	bob.waitLine(t, "ready", 30*time.Second)
	alice = startProc(t, daemonArgs(root+"/alice", []string{sp.addr})...)
	alice.waitLine(t, "ready", 30*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		h := mustRun(t, "--home", root+"/bob", "chat", "history", "alice")
		if c := strings.Count(h, "survives a crash"); c == 1 {
			break
		} else if c > 1 {
			t.Fatalf("delivered %d times:\n%s", c, h)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after the sender's restart:\n%s", h)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMailboxHoldersKilled: bob is offline for the whole exchange; two of
// the three supernodes holding his mail are SIGKILLed and one of them
// restarted; bob comes back and gets every message once, in order, within
// 10 s.
func TestMailboxHoldersKilled(t *testing.T) {
	root := t.TempDir()
	sps := make([]*superProc, 4)
	var boots []string
	for i := range sps {
		sps[i] = newSuper(t, root, i)
		startSuper(t, sps[i], boots)
		boots = append(boots, sps[i].addr)
	}
	for _, h := range []string{"alice", "bob"} {
		mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
	}
	bob := startProc(t, daemonArgs(root+"/bob", boots)...)
	bob.waitLine(t, "ready", 30*time.Second) // publishes bob's record
	bob.cmd.Process.Signal(os.Interrupt)
	<-bob.done
	alice := startProc(t, daemonArgs(root+"/alice", boots)...)
	alice.waitLine(t, "ready", 30*time.Second)

	const n = 12
	for i := 0; i < n; i++ {
		out := mustRun(t, "--home", root+"/alice", "chat", "send", "bob", fmt.Sprintf("offline %02d", i))
		if !strings.Contains(out, "left in the mailbox of 1 offline device") {
			t.Fatalf("message %d: %s", i, out)
		}
	}
	var holders []*superProc
	for _, sp := range sps {
		if sp.envelopes(t) == n {
			holders = append(holders, sp)
		}
	}
	if len(holders) != 3 {
		t.Fatalf("%d supernodes hold all %d envelopes, want 3", len(holders), n)
	}
	holders[0].kill()
	holders[1].kill()
	startSuper(t, holders[0], boots) // one comes back, its database intact

	start := time.Now()
	bob = startProc(t, daemonArgs(root+"/bob", boots)...)
	var h string
	for {
		if _, err := os.Stat(root + "/bob/parley.sock"); err == nil {
			if out, _, code := run(t, "--home", root+"/bob", "chat", "history", "alice"); code == 0 {
				h = out
				if strings.Count(h, "offline ") >= n {
					break
				}
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("after %s bob has:\n%s", time.Since(start), h)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(h), "\n")
	if len(lines) != n {
		t.Fatalf("bob's history has %d lines, want %d:\n%s", len(lines), n, h)
	}
	for i, l := range lines {
		if !strings.Contains(l, fmt.Sprintf("offline %02d", i)) {
			t.Fatalf("line %d out of order: %s", i, l)
		}
	}
	t.Logf("all %d in order %s after bob restarted", n, time.Since(start).Round(time.Millisecond))
}
