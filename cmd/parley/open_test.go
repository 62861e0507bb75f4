package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOpenWebApp: the daemon serves its web app on a loopback port and
// says where; parley open prints a login link that works once; a daemon
// asked to serve it elsewhere, or a parley open with no app, fails in one
// line.
func TestOpenWebApp(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))
	for _, h := range []string{"alice", "bob"} {
		mustRun(t, "--home", root+"/"+h, "id", "init", "--handle", h)
	}
	alice := startProc(t, "--home", root+"/alice", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	if l := alice.waitLine(t, "web app: http://127.0.0.1:", 30*time.Second); l == "" {
		t.Fatal("the daemon did not say where its web app is")
	}
	alice.waitLine(t, "ready", 30*time.Second)
	link := strings.TrimSpace(mustRun(t, "--home", root+"/alice", "open"))
	if !strings.HasPrefix(link, "http://127.0.0.1:") || !strings.Contains(link, "/login?token=") {
		t.Fatalf("parley open printed %q", link)
	}
	for i, want := range []int{http.StatusOK, http.StatusForbidden} {
		resp, err := http.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("login link, use %d: %s, want %d", i+1, resp.Status, want)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"web app on a public address", []string{"--home", root + "/bob", "daemon", "--bootstrap", boot, "--ui", "0.0.0.0:0"}, "loopback"},
		{"open without a daemon", []string{"--home", root + "/nobody", "open"}, "no parley daemon is running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := run(t, tc.args...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, stderr is not one line containing %q:\n%s", code, tc.want, errOut)
			}
		})
	}

	bob := startProc(t, "--home", root+"/bob", "daemon", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0", "--ui", "off")
	bob.waitLine(t, "ready", 30*time.Second)
	_, errOut, code := run(t, "--home", root+"/bob", "open")
	if code == 0 || !strings.Contains(errOut, "no web app") {
		t.Fatalf("parley open against --ui off: exit %d, %s", code, errOut)
	}
}
