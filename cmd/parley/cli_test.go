package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
)

// These tests run the real parley binary the way the README tells a person
// to: a supernode and two daemons in their own homes, CLI verbs against them.

var parleyBin string

func TestMain(m *testing.M) {
	nodetest.RunWithParley(m, "PARLEY_TEST_BINARY", nil, &parleyBin)
}

// proc is a long-running parley process whose stdout is scanned line by
// line; the tail of its stderr is kept to say why it failed.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	stderr tailBuffer
	added  chan struct{}
	done   chan struct{}
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 8<<10; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(parleyBin, args...), added: make(chan struct{}, 1), done: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.added <- struct{}{}:
			default:
			}
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLine returns the first output line containing substr.
func (p *proc) waitLine(t *testing.T, substr string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l, substr) {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-p.added:
		case <-p.done:
			t.Fatalf("process exited (%v) before printing %q; output:\n%s\nstderr (tail):\n%s", p.cmd.ProcessState, substr, strings.Join(p.lines, "\n"), p.stderr.String())
		case <-deadline:
			t.Fatalf("no %q within %s; output:\n%s\nstderr (tail):\n%s", substr, d, strings.Join(p.lines, "\n"), p.stderr.String())
		}
	}
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, parleyBin, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, args...)
	if code != 0 {
		t.Fatalf("parley %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func TestReadmeThreeTerminals(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))

	for _, h := range []string{"alice", "bob"} {
		out := mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
		if !strings.Contains(out, "fingerprint") {
			t.Fatalf("id init printed no fingerprint:\n%s", out)
		}
	}
	alice := startProc(t, "--home", root+"/alice", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	bob := startProc(t, "--home", root+"/bob", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)

	who := mustRun(t, "--home", root+"/alice", "whois", "bob")
	bobID := mustRun(t, "--home", root+"/bob", "id", "show")
	for _, want := range []string{"fingerprint", "lookup"} {
		if !strings.Contains(who, want) {
			t.Fatalf("whois output lacks %q:\n%s", want, who)
		}
	}
	fpLine := func(s string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "fingerprint") {
				return strings.TrimSpace(strings.TrimPrefix(l, "fingerprint"))
			}
		}
		return ""
	}
	if fpLine(who) == "" || fpLine(who) != fpLine(bobID) {
		t.Fatalf("alice sees fingerprint %q for bob, bob shows %q", fpLine(who), fpLine(bobID))
	}

	out := mustRun(t, "--home", root+"/alice", "chat", "send", "bob", "hello bob, it's alice")
	if !strings.Contains(out, "delivered to 1 device") {
		t.Fatalf("send: %s", out)
	}
	hist := mustRun(t, "--home", root+"/bob", "chat", "history", "alice")
	if !strings.Contains(hist, "alice:   hello bob, it's alice") {
		t.Fatalf("bob's history:\n%s", hist)
	}
	// bob has read it (chat history marks it read): alice sees that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		hist = mustRun(t, "--home", root+"/alice", "chat", "history", "bob")
		if strings.Contains(hist, " read]") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's history does not show bob read it:\n%s", hist)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("interactive chat", func(t *testing.T) {
		// bob types a line into `parley chat alice`; alice's interactive session prints it.
		a := exec.Command(parleyBin, "--home", root+"/alice", "chat", "bob")
		aout, _ := a.StdoutPipe()
		ain, _ := a.StdinPipe()
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { ain.Close(); a.Wait() }()
		sc := bufio.NewScanner(aout)
		waitFor := func(substr string) {
			found := make(chan bool, 1)
			go func() {
				for sc.Scan() {
					if strings.Contains(sc.Text(), substr) {
						found <- true
						return
					}
				}
				found <- false
			}()
			select {
			case ok := <-found:
				if !ok {
					t.Fatalf("interactive chat ended before %q", substr)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("interactive chat never printed %q", substr)
			}
		}
		waitFor("chatting with bob")
		b := exec.Command(parleyBin, "--home", root+"/bob", "chat", "bob-typo-check")
		b.Run() // an unknown handle must not disturb anything
		mustRun(t, "--home", root+"/bob", "chat", "send", "alice", "typed by bob")
		waitFor("typed by bob")
		fmt.Fprintln(ain, "typed by alice")
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(mustRun(t, "--home", root+"/bob", "chat", "history", "alice"), "typed by alice") {
			if time.Now().After(deadline) {
				t.Fatal("bob never got the line alice typed")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func TestCLIErrorsAreOneLine(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))
	mustRun(t, "--home", root+"/alice", "id", "init", "--handle", "alice")
	alice := startProc(t, "--home", root+"/alice", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	alice.waitLine(t, "ready", 30*time.Second)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown handle", []string{"--home", root + "/alice", "whois", "nobody"}, "no such handle"},
		{"send to unknown handle", []string{"--home", root + "/alice", "chat", "send", "nobody", "hi"}, "no such handle"},
		{"bad handle", []string{"--home", root + "/alice", "whois", "NOT VALID"}, "invalid handle"},
		{"no daemon", []string{"--home", root + "/empty", "whois", "alice"}, "no parley daemon is running"},
		{"daemon without identity", []string{"--home", root + "/empty", "daemon", "--bootstrap", boot}, "run 'parley id init"},
		{"second daemon on the same home", []string{"--home", root + "/alice", "daemon", "--bootstrap", boot}, "already in use"},
		{"bootstrap without peer id", []string{"--home", root + "/alice", "daemon", "--bootstrap", "/ip4/127.0.0.1/tcp/9"}, "/p2p/"},
		{"identity exists", []string{"--home", root + "/alice", "id", "init", "--handle", "alice"}, "already holds an identity"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0; stdout:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "parley: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr is not one clear line containing %q:\n%s", tc.want, errOut)
			}
		})
	}
}

func TestDemoJSON(t *testing.T) {
	out := mustRun(t, "demo", "--json")
	var rep struct {
		OK    bool `json:"ok"`
		Nodes int  `json:"nodes"`
		Chat  struct {
			Sent, Delivered, Duplicates, Lost int
		} `json:"chat"`
		Call struct {
			Path              string  `json:"path"`
			MOS               float64 `json:"mos"`
			AudioCorrelation  float64 `json:"audio_correlation"`
			DevicesRang       int     `json:"devices_rang"`
			AnsweredElsewhere bool    `json:"answered_elsewhere"`
			SetupMS           float64 `json:"setup_ms"`
		} `json:"call"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("demo --json is not one JSON object: %v\n%s", err, out)
	}
	c, k := rep.Chat, rep.Call
	if !rep.OK || rep.Nodes != 7 || c.Sent != 20 || c.Delivered != 20 || c.Lost != 0 || c.Duplicates != 0 {
		t.Fatalf("demo chat: %s", out)
	}
	if k.AudioCorrelation < 0.9 || k.MOS < 4 || k.DevicesRang != 2 || !k.AnsweredElsewhere || k.Path != "direct" || k.SetupMS <= 0 {
		t.Fatalf("demo call: %s", out)
	}
}

// TestNetcheckPingCLI: against a supernode with STUN and TURN and a cloud
// relay on 127.0.0.1, `parley netcheck` prints the table and --json the
// report, and `parley ping` gets an answer per probe; both fail in one
// line without a daemon.
func TestNetcheckPingCLI(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0",
		"--turn-udp", "127.0.0.1:0", "--turn-tcp", "127.0.0.1:0", "--turn-relay-ip", "127.0.0.1", "--turn-allow-cidr", "127.0.0.0/8")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))
	for _, h := range []string{"alice", "bob"} {
		mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
	}
	alice := startProc(t, "--home", root+"/alice", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0", "--metrics", "127.0.0.1:0")
	bob := startProc(t, "--home", root+"/bob", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)

	out := mustRun(t, "--home", root+"/alice", "netcheck")
	t.Logf("parley netcheck:\n%s", out)
	for _, want := range []string{"UDP             yes", "mapping         endpoint-independent", "STUN", "TURN", "allocated", "libp2p round trip"} {
		if !strings.Contains(out, want) {
			t.Errorf("netcheck lacks %q:\n%s", want, out)
		}
	}
	js := mustRun(t, "--home", root+"/alice", "netcheck", "--json")
	var r struct {
		UDP     bool   `json:"udp"`
		Mapping string `json:"mapping"`
	}
	if err := json.Unmarshal([]byte(js), &r); err != nil || !r.UDP || r.Mapping != "endpoint-independent" {
		t.Errorf("netcheck --json: %+v, %v\n%s", r, err, js)
	}
	out = mustRun(t, "--home", root+"/alice", "ping", "bob", "--count", "2", "--interval", "100ms")
	t.Logf("parley ping bob:\n%s", out)
	if lines := strings.Count(out, " ms "); lines != 2 || !strings.Contains(out, "direct") {
		t.Errorf("ping: want two answered probes, direct:\n%s", out)
	}
	// Without a daemon, against the supernode alone.
	js = mustRun(t, "--home", root+"/nobody", "netcheck", "--json", "--bootstrap", boot)
	var alone struct {
		UDP  bool `json:"udp"`
		TURN []struct {
			OK bool `json:"ok"`
		} `json:"turn"`
	}
	if err := json.Unmarshal([]byte(js), &alone); err != nil || !alone.UDP || len(alone.TURN) != 2 || !alone.TURN[0].OK || !alone.TURN[1].OK {
		t.Errorf("netcheck --bootstrap without a daemon: %+v, %v\n%s", alone, err, js)
	}
	_, errOut, code := run(t, "--home", root+"/nobody", "netcheck")
	checkOneLine(t, "", errOut, code, 0, "")
	_, errOut, code = run(t, "--home", root+"/alice", "ping", "nobody-here", "--count", "1")
	checkOneLine(t, "", errOut, code, 0, "")
}
