package node

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-net/parley/browser"
)

// The local web app (`parley daemon --ui ADDR`): the embedded page of
// browser served on a loopback address, as one more client of the
// control API. A person logs in with a one-time URL (`parley open`), which
// sets a session cookie (HttpOnly, SameSite=Strict); every state change
// carries the session's CSRF token in a header; the WebSocket checks Origin;
// every response carries a strict Content-Security-Policy. The page's
// WebSocket carries the node's events to it and, for calls made or answered
// with the browser's microphone, the page's RTCPeerConnection (browserleg.go).
//
//	GET  /login?token=T      one-time login: sets the cookie, then opens /
//	GET  /                   the app (index.html), with a session
//	GET  /assets/...         its scripts and styles
//	GET  /api/session        {"csrf","handle","fingerprint","page_ttl_ms"}
//	GET|POST /api/v1/...     the control API routes the app uses (POST: CSRF)
//	POST /api/call           {"to","page"} -> CallInfo: a call with the page's media
//	POST /api/answer         {"id","page"} -> CallInfo: answer with the page's media
//	GET  /ws?csrf=T          the page's WebSocket ({"t":"hello","page"} first)

// UI limits.
const (
	loginTokenTTL  = 10 * time.Minute
	uiSessionTTL   = 12 * time.Hour
	maxLoginTokens = 16
	maxUISessions  = 64
	maxUIPages     = 16
	uiCookie       = "parley_session"
)

// uiCSP is the Content-Security-Policy of every response: nothing but this
// origin's own scripts, styles, fetches and WebSocket; no inline script, no
// framing, no plugins.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws://%s; media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// UI is the local web app server of a node.
type UI struct {
	n    *Node
	api  http.Handler
	addr string // host:port it listens on, what Host and Origin must name
	srv  *http.Server
	up   websocket.Upgrader

	// mu guards the maps below.
	mu       sync.Mutex
	tokens   map[string]time.Time // one-time login token -> expiry
	sessions map[string]*uiSession
	pages    map[string]*browser.Page
	nextPage int
}

type uiSession struct {
	csrf    string
	expires time.Time
}

// ErrUIAddr is an address the web app may not listen on.
var ErrUIAddr = errors.New("the web app listens on a loopback address only")

// ServeUI serves the web app on addr (host:port; port 0 picks a free one),
// which must be a loopback address, until the node closes.
func (n *Node) ServeUI(addr string) (*UI, error) {
	if err := CheckUIAddr(addr); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("web app: %w", err)
	}
	u := &UI{n: n, api: n.apiHandler(), addr: l.Addr().String(), tokens: map[string]time.Time{},
		sessions: map[string]*uiSession{}, pages: map[string]*browser.Page{}}
	u.up = websocket.Upgrader{ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10, CheckOrigin: u.sameOrigin}
	u.srv = &http.Server{Handler: u.handler(), ReadHeaderTimeout: 5 * time.Second}
	n.ui.Store(u)
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := u.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("web app stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		<-n.ctx.Done()
		u.srv.Close()
	}()
	return u, nil
}

// CheckUIAddr says whether the web app may listen on addr: host:port with
// a loopback host.
func CheckUIAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--ui %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--ui %q: %w", addr, ErrUIAddr)
	}
	return nil
}

// Addr is the address the web app listens on.
func (u *UI) Addr() string { return u.addr }

// LoginURL makes a one-time login URL, valid for 10 minutes.
func (u *UI) LoginURL() string {
	tok := randomToken()
	now := u.n.clock.Now()
	u.mu.Lock()
	for t, exp := range u.tokens {
		if now.After(exp) {
			delete(u.tokens, t)
		}
	}
	if len(u.tokens) >= maxLoginTokens {
		for t := range u.tokens { // the map's order is random: drop any one
			delete(u.tokens, t)
			break
		}
	}
	u.tokens[tok] = now.Add(loginTokenTTL)
	u.mu.Unlock()
	return "http://" + u.addr + "/login?token=" + tok
}

func randomToken() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sameOrigin is the WebSocket's Origin check: the page must be the app's own.
func (u *UI) sameOrigin(r *http.Request) bool {
	o, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && o.Scheme == "http" && o.Host == u.addr
}

func (u *UI) handler() http.Handler {
	mux := http.NewServeMux()
	assets, _ := fs.Sub(browser.Assets, "web")
	files := http.FileServerFS(assets)
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", files))
	mux.HandleFunc("GET /login", u.login)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if u.session(r) == nil {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, loggedOutPage) // a browser that went away: nothing to do
			return
		}
		http.ServeFileFS(w, r, assets, "index.html")
	})
	mux.HandleFunc("GET /api/session", u.authed(u.apiSession))
	mux.HandleFunc("/api/v1/", u.authed(u.proxy))
	mux.HandleFunc("POST /api/call", u.authed(u.browserCall))
	mux.HandleFunc("POST /api/answer", u.authed(u.browserAnswer))
	mux.HandleFunc("GET /ws", u.authed(u.ws))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A name other than the address we listen on is a DNS rebinding
		// attempt (evil.example resolving to 127.0.0.1): refused.
		if r.Host != u.addr {
			http.Error(w, "wrong host", http.StatusMisdirectedRequest)
			return
		}
		browser.SecureHeaders(w.Header(), fmt.Sprintf(uiCSP, u.addr))
		mux.ServeHTTP(w, r)
	})
}

const loggedOutPage = `<!doctype html><meta charset="utf-8"><title>parley</title>
<p>Not logged in. Run <code>parley open</code> for a login link.</p>`

// login trades a one-time token for a session cookie. The page it answers
// opens / itself: a SameSite=Strict cookie is not sent on a redirect that a
// link from elsewhere started, but is on a navigation of our own page.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	now := u.n.clock.Now()
	u.mu.Lock()
	exp, ok := u.tokens[tok]
	delete(u.tokens, tok)
	if ok && now.Before(exp) {
		for id, s := range u.sessions {
			if now.After(s.expires) {
				delete(u.sessions, id)
			}
		}
		if len(u.sessions) >= maxUISessions {
			ok = false
		}
	}
	id := randomToken()
	if ok && now.Before(exp) {
		u.sessions[id] = &uiSession{csrf: randomToken(), expires: now.Add(uiSessionTTL)}
	}
	u.mu.Unlock()
	if !ok || !now.Before(exp) {
		http.Error(w, "this login link was used or has expired: run parley open for a new one", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: id, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(uiSessionTTL.Seconds())})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = fmt.Fprint(w, `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/"><title>parley</title><a href="/">open parley</a>`)
}

// session is the request's login session, or nil.
func (u *UI) session(r *http.Request) *uiSession {
	c, err := r.Cookie(uiCookie)
	if err != nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sessions[c.Value]
	if s == nil || u.n.clock.Now().After(s.expires) {
		return nil
	}
	return s
}

// authed lets through requests of a logged-in session; a state change
// (any method but GET and HEAD) must carry its CSRF token.
func (u *UI) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := u.session(r)
		if s == nil {
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "not logged in: run parley open"})
			return
		}
		tok := r.Header.Get("X-CSRF-Token")
		if r.URL.Path == "/ws" {
			tok = r.URL.Query().Get("csrf")
		}
		needs := (r.Method != http.MethodGet && r.Method != http.MethodHead) || r.URL.Path == "/ws"
		if needs && subtle.ConstantTimeCompare([]byte(tok), []byte(s.csrf)) != 1 {
			writeJSON(w, http.StatusForbidden, apiError{Error: "missing or wrong CSRF token"})
			return
		}
		h(w, r)
	}
}

func (u *UI) apiSession(w http.ResponseWriter, r *http.Request) {
	s := u.session(r)
	st := u.n.Status()
	writeJSON(w, http.StatusOK, map[string]string{"csrf": s.csrf, "handle": st.Handle, "fingerprint": st.Fingerprint, "peer_id": st.PeerID})
}

// uiRoutes are the control API routes the app may use: none opens a file
// on the daemon's disk (the audio options of calls are the page's).
var uiRoutes = []string{
	"GET /v1/status", "GET /v1/whois/", "GET /v1/chat/history/", "POST /v1/chat/send",
	"GET /v1/calls", "POST /v1/call/reject", "POST /v1/call/hangup",
	"GET /v1/devices", "POST /v1/link", "POST /v1/devices/unlink",
	"GET /v1/groups", "POST /v1/groups", "GET /v1/netcheck", "GET /v1/ping/",
}

// proxy hands an allowed request to the control API.
func (u *UI) proxy(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/api")
	allowed := false
	for _, rt := range uiRoutes {
		method, p, _ := strings.Cut(rt, " ")
		if r.Method == method && (path == p || strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) || strings.HasPrefix(path, p+"/") && method == "GET") {
			allowed = true
			break
		}
	}
	if !allowed {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such route in the web app: " + r.Method + " " + path})
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = path, ""
	r2.RequestURI = ""
	u.api.ServeHTTP(w, r2)
}

type uiCallRequest struct {
	To   string `json:"to,omitempty"`
	ID   string `json:"id,omitempty"`
	Page string `json:"page"`
}

func (u *UI) page(id string) *browser.Page {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pages[id]
}

// pageRequest reads a call request of a page and finds the page; false
// when it answered with the error already.
func (u *UI) pageRequest(w http.ResponseWriter, r *http.Request) (uiCallRequest, *browser.Page, bool) {
	var req uiCallRequest
	if !readJSON(w, r, &req) {
		return req, nil, false
	}
	p := u.page(req.Page)
	if p == nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "no such page: reload the app"})
		return req, nil, false
	}
	return req, p, true
}

// browserCall calls a handle with the page's microphone and speaker.
func (u *UI) browserCall(w http.ResponseWriter, r *http.Request) {
	req, p, ok := u.pageRequest(w, r)
	if !ok {
		return
	}
	c, err := u.n.Call(u.n.ctx, req.To, CallOptions{Browser: p})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userCall(c.Info()))
}

// browserAnswer answers a ringing call with the page's microphone and speaker.
func (u *UI) browserAnswer(w http.ResponseWriter, r *http.Request) {
	req, p, ok := u.pageRequest(w, r)
	if !ok {
		return
	}
	c, err := u.n.FindCall(req.ID)
	if err == nil {
		err = c.Answer(r.Context(), CallOptions{Browser: p})
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userCall(c.Info()))
}

// ws serves a page's WebSocket: the node's events out, its peer
// connections both ways.
func (u *UI) ws(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	full := len(u.pages) >= maxUIPages
	u.mu.Unlock()
	if full {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "too many app pages open"})
		return
	}
	conn, err := u.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	p := browser.NewPage(conn, u.n.log.With("subsystem", "webui"))
	u.mu.Lock()
	u.nextPage++
	id := fmt.Sprintf("page%d", u.nextPage)
	u.pages[id] = p
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.pages, id)
		u.mu.Unlock()
	}()
	events, stop := u.n.Subscribe()
	defer stop()
	p.Send(browser.Message{T: "hello", ID: id})
	u.n.wg.Add(1)
	go func() {
		defer u.n.wg.Done()
		for {
			select {
			case e, ok := <-events:
				if !ok {
					p.Close()
					return
				}
				if e.Call != nil {
					ci := userCall(*e.Call)
					e.Call = &ci
				}
				p.Send(browser.Message{T: "event", Event: e})
			case <-p.Done():
				return
			}
		}
	}()
	if err := p.Serve(u.n.ctx); err != nil {
		u.n.log.Debug("web app page closed", "err", err)
	}
}
