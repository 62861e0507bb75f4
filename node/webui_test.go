package node

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// The web app's defences, over real HTTP to a real node's app: only
// loopback, a one-time login, HttpOnly SameSite=Strict cookie, CSRF on
// every state change, a strict CSP, Host and Origin checks, and none of
// the control API's file-opening routes.
func TestWebAppSecurity(t *testing.T) {
	sn := startSupernode(t)
	n := startCallNode(t, initHome(t, "alice"), sn, nil)
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.2:0", "example.com:0"} {
		if _, err := n.ServeUI(addr); !errors.Is(err, ErrUIAddr) {
			t.Fatalf("ServeUI(%s) = %v, want ErrUIAddr", addr, err)
		}
	}
	u, err := n.ServeUI("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + u.Addr()
	anon := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}

	do := func(c *http.Client, method, path, csrf, body string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
			} else {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	if r := do(anon, "GET", "/", "", ""); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the app without a login: %s", r.Status)
	}
	if r := do(anon, "GET", "/api/v1/status", "", ""); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the API without a login: %s", r.Status)
	}
	login := strings.TrimPrefix(u.LoginURL(), base)
	r := do(hc, "GET", login, "", "")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("login: %s", r.Status)
	}
	if c := r.Header.Get("Set-Cookie"); !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Strict") {
		t.Fatalf("login cookie %q, want HttpOnly and SameSite=Strict", c)
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	if r := do(anon, "GET", login, "", ""); r.StatusCode != http.StatusForbidden {
		t.Fatalf("a login link used twice: %s", r.Status)
	}
	if r := do(hc, "GET", "/", "", "", "Host", "rebind.example:"+strings.Split(u.Addr(), ":")[1]); r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("another Host (DNS rebinding): %s", r.Status)
	}

	resp, err := hc.Get(base + "/api/session")
	if err != nil {
		t.Fatal(err)
	}
	var sess struct{ CSRF string }
	json.NewDecoder(resp.Body).Decode(&sess)
	resp.Body.Close()
	if sess.CSRF == "" {
		t.Fatal("no CSRF token in the session")
	}
	send := `{"group":"x","text":"hi"}`
	for name, tok := range map[string]string{"no": "", "a wrong": "x" + sess.CSRF} {
		if r := do(hc, "POST", "/api/v1/chat/send", tok, send); r.StatusCode != http.StatusForbidden {
			t.Fatalf("a state change with %s CSRF token: %s", name, r.Status)
		}
	}
	if r := do(hc, "POST", "/api/v1/groups", sess.CSRF, `{"name":"g","members":[]}`); r.StatusCode == http.StatusForbidden || r.StatusCode == http.StatusNotFound {
		t.Fatalf("a state change with the CSRF token: %s", r.Status)
	}
	// Calls whose audio is a file on the daemon's disk are the CLI's.
	if r := do(hc, "POST", "/api/v1/calls", sess.CSRF, `{"to":"bob","audio":{"in":"/etc/passwd"}}`); r.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /v1/calls through the app: %s, want 404", r.Status)
	}
	if r := do(hc, "POST", "/api/v1/call/answer", sess.CSRF, `{"audio":{"record":"/tmp/x"}}`); r.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /v1/call/answer through the app: %s, want 404", r.Status)
	}

	// The WebSocket: its Origin must be the app's, and it needs the token.
	wsURL := "ws://" + u.Addr() + "/ws?csrf=" + url.QueryEscape(sess.CSRF)
	cookies := jar.Cookies(&url.URL{Scheme: "http", Host: u.Addr()})
	hdr := func(origin string) http.Header {
		h := http.Header{"Origin": {origin}}
		for _, c := range cookies {
			h.Add("Cookie", c.String())
		}
		return h
	}
	if _, r, err := websocket.DefaultDialer.Dial(wsURL, hdr("http://evil.example")); err == nil || r == nil || r.StatusCode != http.StatusForbidden {
		t.Fatalf("a WebSocket from another origin: %v", err)
	}
	if _, r, err := websocket.DefaultDialer.Dial("ws://"+u.Addr()+"/ws", hdr(base)); err == nil || r == nil || r.StatusCode != http.StatusForbidden {
		t.Fatalf("a WebSocket without the CSRF token: %v", err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, hdr(base))
	if err != nil {
		t.Fatalf("the app's own WebSocket: %v", err)
	}
	defer ws.Close()
	var hello struct{ T, ID string }
	if err := ws.ReadJSON(&hello); err != nil || hello.T != "hello" || hello.ID == "" {
		t.Fatalf("first WebSocket message %+v, %v", hello, err)
	}
}
