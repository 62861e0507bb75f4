package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkOneLine fails unless a failed command printed one line on stderr,
// "parley: …" with want in it, and no Go internals.
func checkOneLine(t *testing.T, out, errOut string, code, wantCode int, want string) {
	t.Helper()
	if code == 0 || (wantCode != 0 && code != wantCode) {
		t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, wantCode, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "parley: ") || !strings.Contains(lines[0], want) {
		t.Fatalf("stderr is not one clear line containing %q:\n%s", want, errOut)
	}
	for _, internal := range []string{"<peer.ID", "404 Not Found", "unexpected EOF", "failed to find any peer in table", "No help topic"} {
		if strings.Contains(errOut, internal) {
			t.Fatalf("stderr shows Go internals (%q):\n%s", internal, errOut)
		}
	}
}

// TestUsageErrors: a command line parley cannot make sense of is one line
// and exit 2, with no daemon needed.
func TestUsageErrors(t *testing.T) {
	home := t.TempDir()
	badConfig := filepath.Join(home, "bad.toml")
	if err := os.WriteFile(badConfig, []byte("[supernode]\nturn-udpp = \"0.0.0.0:3479\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"nosuchcmd"}, `unknown command "nosuchcmd"`},
		{"unknown subcommand", []string{"id", "nosuch"}, `unknown command "nosuch" (see 'parley id --help')`},
		{"bad log level", []string{"--log-level", "loud", "status"}, `--log-level "loud"`},
		{"bad log level after the command", []string{"status", "--log-level", "loud"}, `--log-level "loud"`},
		{"id init without --handle", []string{"--home", home, "id", "init"}, "id init needs --handle"},
		{"unknown flag", []string{"chat", "send", "--bogus", "bob", "hi"}, "flag provided but not defined: -bogus"},
		{"missing argument", []string{"whois"}, "usage: parley whois HANDLE"},
		{"missing argument of a subcommand", []string{"chat", "history"}, "usage: parley chat history HANDLE"},
		{"unknown flag of a subcommand", []string{"id", "init", "--bogus"}, "(see 'parley id init --help')"},
		{"help on an unknown command", []string{"help", "nosuch"}, "unknown command 'nosuch'"},
		{"chat send without text", []string{"chat", "send", "bob"}, "usage: parley chat send"},
		{"typo in the config file", []string{"--config", badConfig, "status"}, `unknown key "supernode.turn-udpp": 'parley supernode' has no --turn-udpp`},
		{"bad log format", []string{"--log-format", "xml", "status"}, `--log-format "xml": use text or json`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, tc.args...)
			checkOneLine(t, out, errOut, code, exitUsage, tc.want)
		})
	}
}

// TestRoughEdges runs what a new user tried against a supernode and two
// daemons: messages over the limit, sending to yourself, flags after
// arguments, a long line typed into an interactive chat, and a device
// unlinked from the account.
func TestRoughEdges(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))
	for _, h := range []string{"alice", "bob"} {
		mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
	}
	alice := startProc(t, "--home", root+"/alice", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	bob := startProc(t, "--home", root+"/bob", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)
	A, B := root+"/alice", root+"/bob"

	t.Run("flags after arguments", func(t *testing.T) {
		if out := mustRun(t, "whois", "bob", "--home", A); !strings.Contains(out, "fingerprint") {
			t.Fatalf("whois: %s", out)
		}
		mustRun(t, "chat", "send", "bob", "hi bob", "--home", A)
	})

	errCases := []struct {
		name string
		args []string
		want string
	}{
		{"message of 100 KB", []string{"--home", A, "chat", "send", "bob", strings.Repeat("x", 100_000)}, "a message is at most 16384 bytes"},
		{"message one byte over", []string{"--home", A, "chat", "send", "bob", strings.Repeat("x", 16385)}, "16385 bytes, and a message is at most 16384 bytes"},
		{"send to yourself, no other device", []string{"--home", A, "chat", "send", "alice", "note to self"}, "sent to no device"},
		{"whois nothing", []string{"--home", A, "whois", ""}, "invalid handle"},
		{"history of nothing", []string{"--home", A, "chat", "history", ""}, "invalid handle"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, tc.args...)
			checkOneLine(t, out, errOut, code, 0, tc.want)
		})
	}
	t.Run("message of exactly 16 KiB", func(t *testing.T) {
		mustRun(t, "--home", A, "chat", "send", "bob", strings.Repeat("y", 16384))
	})

	t.Run("interactive chat keeps the lines after a long one", func(t *testing.T) {
		c := exec.Command(parleyBin, "--home", A, "chat", "bob")
		c.Stdin = strings.NewReader("before the long line\n" + strings.Repeat("z", 70_000) + "\nafter the long line\n")
		var o, e strings.Builder
		c.Stdout, c.Stderr = &o, &e
		err := c.Run()
		if err == nil {
			t.Fatalf("exit 0 although a line was not sent; stderr:\n%s", e.String())
		}
		if !strings.Contains(e.String(), "line 2 not sent: 70000 bytes, and a message is at most 16384 bytes") {
			t.Fatalf("stderr does not name the long line:\n%s", e.String())
		}
		hist := mustRun(t, "--home", B, "chat", "history", "alice")
		for _, want := range []string{"before the long line", "after the long line"} {
			if !strings.Contains(hist, want) {
				t.Fatalf("bob's history lacks %q:\n%s", want, hist)
			}
		}
		if strings.Contains(hist, "zzzz") {
			t.Fatal("part of the long line was sent")
		}
	})

	t.Run("unlinked device", func(t *testing.T) {
		linkCode := strings.TrimSpace(strings.SplitN(mustRun(t, "--home", A, "id", "link"), "\n", 2)[0])
		P := root + "/alice-phone"
		mustRun(t, "--home", P, "id", "join", linkCode, "--bootstrap", boot, "--device", "phone")
		phone := startProc(t, "--home", P, "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
		phone.waitLine(t, "ready", 30*time.Second)
		var phoneID string
		for _, l := range strings.Split(mustRun(t, "--home", P, "id", "show"), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "peer" {
				phoneID = f[2]
			}
		}
		if out := mustRun(t, "--home", P, "id", "devices"); !strings.Contains(out, phoneID+"  phone  (this device)") {
			t.Fatalf("the phone does not list itself:\n%s", out)
		}
		mustRun(t, "--home", A, "id", "unlink", phoneID)

		out, errOut, code := run(t, "--home", P, "id", "devices")
		checkOneLine(t, out, errOut, code, 1, "was unlinked from alice")
		if strings.Contains(out, phoneID) {
			t.Fatalf("the unlinked phone still lists itself:\n%s", out)
		}
		out, errOut, code = run(t, "--home", P, "chat", "send", "bob", "from an unlinked phone")
		if !strings.Contains(out, "refused by") {
			t.Fatalf("send from an unlinked device: %s %s", out, errOut)
		}
		checkOneLine(t, out, errOut, code, 1, "refused by")
	})
}
