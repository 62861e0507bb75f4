package browser

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"
)

// Guests: a person with no parley opens /call/HANDLE on a server that runs
// a GuestServer (`parley supernode --web ADDR`) and calls that handle with
// the browser's microphone. The page (web/guest.html, web/guest.js and the
// app's rtc.js) opens one WebSocket, /call/HANDLE/ws, which speaks this
// package's protocol with a smaller bound (MaxGuestMessage); the server
// hands the Page to a GuestCaller, which rings the handle's devices over
// libp2p and drives the page's peer connections like any browser leg. The
// call ends when the WebSocket closes (the page's hangup) or the caller
// returns. The server also tells the page how the call goes:
//
//	event {event: {"guest": "calling"|"ringing"|"answered"|"ended"|"notice", "reason"}}
//
// The endpoint serves nothing else: no control API, no login, no other
// file. Per client IP (the TCP peer's address: a proxy in front makes every
// guest one IP) it admits at most MaxPerIP WebSockets at once,
// CallsPerMinute calls and TURNPerMinute relay credentials a minute; the
// WebSocket's Origin must be this server's own; every response carries a
// strict Content-Security-Policy.

// MaxGuestMessage bounds one message from a guest's page: an SDP offer of a
// browser is 2 to 6 KiB, and the call protocol carries at most 24 KiB.
const MaxGuestMessage = 32 << 10

// Guest endpoint defaults for the zero values of GuestConfig.
const (
	DefaultGuestMaxPerIP    = 4
	DefaultGuestCallsPerMin = 6
	DefaultGuestTURNPerMin  = 6
	DefaultGuestMaxPages    = 256
	// DefaultGuestStallTimeout: the callee's audio comes every 20 ms, or
	// every 400 ms in DTX.
	DefaultGuestStallTimeout  = 2 * time.Second
	maxGuestHandle            = 64
	maxGuestLimiterEntries    = 10000
	guestHandshakeReadTimeout = 5 * time.Second
)

// DecodeGuestMessage is DecodeMessage for a guest's page, with the smaller
// bound MaxGuestMessage.
func DecodeGuestMessage(b []byte) (*Message, error) {
	if len(b) > MaxGuestMessage {
		return nil, fmt.Errorf("%w: %d bytes (limit %d for a guest)", ErrBadMessage, len(b), MaxGuestMessage)
	}
	return DecodeMessage(b)
}

// NewGuestPage is NewPage for a guest's WebSocket: messages are bounded by
// MaxGuestMessage.
func NewGuestPage(conn *websocket.Conn, log *slog.Logger) *Page {
	p := NewPage(conn, log)
	conn.SetReadLimit(MaxGuestMessage)
	p.decode = DecodeGuestMessage
	return p
}

// GuestCall is one guest's call, handed to a GuestCaller.
type GuestCall struct {
	// Handle is the handle called, as the page's URL names it (checked
	// only for length and characters: the caller resolves it).
	Handle string
	// Page is the guest's page: make one Session per device invited.
	Page *Page
	// Session is the ICE configuration the page's peer connections get.
	Session SessionConfig
	// Client is the guest's IP address.
	Client netip.Addr
	// Status tells the page how the call goes ("ringing", "answered", …).
	Status func(state, reason string)
}

// GuestCaller rings a handle's devices for a guest.
type GuestCaller interface {
	// CallGuest runs the call until it ends (ctx ends when the page has
	// gone) and returns why it ended (nil: a hangup).
	CallGuest(ctx context.Context, c GuestCall) error
}

// GuestConfig configures a GuestServer.
type GuestConfig struct {
	// Caller rings the devices; required.
	Caller GuestCaller
	// ICE gives the ICE servers for a guest at client who reached this
	// server at local; turn says whether relay credentials may be issued
	// (the per-IP TURN limit allows it). nil means host candidates only.
	ICE func(client, local netip.Addr, turn bool) []webrtc.ICEServer
	// MaxPerIP is how many guest WebSockets one IP may hold open at once;
	// 0 means DefaultGuestMaxPerIP.
	MaxPerIP int
	// CallsPerMinute is how many calls one IP may start a minute (a burst
	// of as many); 0 means DefaultGuestCallsPerMin.
	CallsPerMinute int
	// TURNPerMinute is how many TURN credentials one IP gets a minute;
	// past it a call gets STUN only. 0 means DefaultGuestTURNPerMin.
	TURNPerMinute int
	// MaxPages bounds the guest WebSockets open in all; 0 means
	// DefaultGuestMaxPages.
	MaxPages int
	// StallTimeout is how long a guest's connected peer connection may
	// receive no packet before it reads as disconnected and the call
	// restarts ICE (SessionConfig.StallTimeout); 0 means
	// DefaultGuestStallTimeout.
	StallTimeout time.Duration
	// CertFile and KeyFile, when both set, serve HTTPS with this PEM
	// certificate chain and key (a browser gives the microphone only to a
	// secure page); "" serves plain HTTP (localhost, or a TLS proxy in
	// front, which then is every guest's IP for the limits).
	CertFile, KeyFile string
	// Logger receives the endpoint's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of the rate limits; nil means time.Now.
	Now func() time.Time
}

// GuestServer is the guest endpoint: GET /call/HANDLE and its WebSocket.
type GuestServer struct {
	cfg   GuestConfig
	srv   *http.Server
	addr  net.Addr
	up    websocket.Upgrader
	calls *ipLimiter
	turn  *ipLimiter
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup // the server and every call

	// mu guards the fields below; wg.Add happens under it, so Close's
	// Wait never races a call that is starting.
	mu     sync.Mutex
	open   map[netip.Addr]int
	total  int
	closed bool
}

// ServeGuests serves the guest endpoint on addr (host:port; port 0 picks a
// free one) until Close.
func ServeGuests(addr string, cfg GuestConfig) (*GuestServer, error) {
	if cfg.Caller == nil {
		return nil, errors.New("guest endpoint: no Caller")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxPerIP, DefaultGuestMaxPerIP)
	def(&cfg.CallsPerMinute, DefaultGuestCallsPerMin)
	def(&cfg.TURNPerMinute, DefaultGuestTURNPerMin)
	def(&cfg.MaxPages, DefaultGuestMaxPages)
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultGuestStallTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var tlsConf *tls.Config
	switch {
	case cfg.CertFile != "" && cfg.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("guest endpoint: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case cfg.CertFile != "" || cfg.KeyFile != "":
		return nil, errors.New("guest endpoint: a certificate needs its key, and a key its certificate")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("guest endpoint: %w", err)
	}
	if tlsConf != nil {
		l = tls.NewListener(l, tlsConf)
	}
	g := &GuestServer{cfg: cfg, addr: l.Addr(), open: map[netip.Addr]int{},
		calls: newIPLimiter(cfg.CallsPerMinute), turn: newIPLimiter(cfg.TURNPerMinute)}
	g.ctx, g.stop = context.WithCancel(context.Background())
	// The Origin check is done before the upgrade, with a clear answer.
	g.up = websocket.Upgrader{ReadBufferSize: 4 << 10, WriteBufferSize: 4 << 10, CheckOrigin: func(*http.Request) bool { return true }}
	g.srv = &http.Server{Handler: g.Handler(), ReadHeaderTimeout: guestHandshakeReadTimeout, MaxHeaderBytes: 16 << 10,
		BaseContext: func(net.Listener) context.Context { return g.ctx }}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.srv.Serve(l)
	}()
	return g, nil
}

// Addr is the address the endpoint listens on.
func (g *GuestServer) Addr() net.Addr { return g.addr }

// URL is the endpoint's base URL (scheme and address).
func (g *GuestServer) URL() string {
	if g.cfg.CertFile != "" {
		return "https://" + g.addr.String()
	}
	return "http://" + g.addr.String()
}

// Close stops the endpoint and ends every guest's call.
func (g *GuestServer) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.stop()
	err := g.srv.Close()
	g.wg.Wait()
	return err
}

// guestCSP allows this origin's scripts and styles, its WebSocket (named
// with the Host the page came from), and nothing else.
const guestCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws://%[1]s wss://%[1]s; media-src blob: mediastream:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// guestFiles are the only files the endpoint serves, besides the page.
var guestFiles = map[string]string{"guest.js": "text/javascript", "rtc.js": "text/javascript", "style.css": "text/css"}

// Handler is the endpoint's HTTP handler (ServeGuests serves it).
func (g *GuestServer) Handler() http.Handler {
	assets, _ := fs.Sub(Assets, "web")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /call/{handle}", func(w http.ResponseWriter, r *http.Request) {
		if !validGuestHandle(r.PathValue("handle")) {
			http.Error(w, "no such handle", http.StatusNotFound)
			return
		}
		serveAsset(w, assets, "guest.html", "text/html; charset=utf-8")
	})
	mux.HandleFunc("GET /guest/{file}", func(w http.ResponseWriter, r *http.Request) {
		f := r.PathValue("file")
		ct, ok := guestFiles[f]
		if !ok {
			http.NotFound(w, r)
			return
		}
		serveAsset(w, assets, f, ct)
	})
	mux.HandleFunc("GET /call/{handle}/ws", g.serveWS)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cleanHost(r.Host) {
			http.Error(w, "bad Host", http.StatusBadRequest)
			return
		}
		SecureHeaders(w.Header(), fmt.Sprintf(guestCSP, r.Host))
		mux.ServeHTTP(w, r)
	})
}

func serveAsset(w http.ResponseWriter, assets fs.FS, name, ct string) {
	b, err := fs.ReadFile(assets, name)
	if err != nil {
		http.Error(w, "missing asset", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Write(b)
}

// cleanHost says whether a Host header may be written into the CSP: a
// host name or address and a port, nothing that could end the directive.
func cleanHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// validGuestHandle is a cheap check of a handle in a URL; the caller
// checks it for real.
func validGuestHandle(h string) bool {
	if h == "" || len(h) > maxGuestHandle {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// sameOrigin: a guest's WebSocket must come from this server's own page.
func sameOrigin(r *http.Request) bool {
	o, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && (o.Scheme == "http" || o.Scheme == "https") && o.Host == r.Host
}

func refuseGuest(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// admit takes a WebSocket slot for ip and a call from its budget, or says
// why not.
func (g *GuestServer) admit(ip netip.Addr) (release func(), refusal string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return nil, "the server is shutting down"
	case g.total >= g.cfg.MaxPages:
		return nil, fmt.Sprintf("guest calls are full here (%d open): try again later", g.total)
	case g.open[ip] >= g.cfg.MaxPerIP:
		return nil, fmt.Sprintf("too many guest calls open from your address (at most %d at once)", g.cfg.MaxPerIP)
	case !g.calls.allow(ip, g.cfg.Now()):
		return nil, fmt.Sprintf("too many guest calls from your address (at most %d a minute): try again later", g.cfg.CallsPerMinute)
	}
	g.open[ip]++
	g.total++
	g.wg.Add(1) // the call, which Close waits for
	return sync.OnceFunc(func() {
		defer g.wg.Done()
		g.mu.Lock()
		defer g.mu.Unlock()
		g.total--
		if g.open[ip]--; g.open[ip] <= 0 {
			delete(g.open, ip)
		}
	}), ""
}

func (g *GuestServer) serveWS(w http.ResponseWriter, r *http.Request) {
	handle := r.PathValue("handle")
	if !validGuestHandle(handle) {
		refuseGuest(w, http.StatusNotFound, "no such handle")
		return
	}
	if !sameOrigin(r) {
		refuseGuest(w, http.StatusForbidden, "this WebSocket is for this server's own call page (Origin)")
		return
	}
	client, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		refuseGuest(w, http.StatusBadRequest, "no client address")
		return
	}
	ip := client.Addr().Unmap()
	release, refusal := g.admit(ip)
	if release == nil {
		g.cfg.Logger.Info("guest refused", "ip", ip, "why", refusal)
		refuseGuest(w, http.StatusTooManyRequests, refusal)
		return
	}
	defer release()
	conn, err := g.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	var local netip.Addr
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			local = ap.Addr().Unmap()
		}
	}
	p := NewGuestPage(conn, g.cfg.Logger.With("guest", ip.String()))
	status := func(state, reason string) {
		p.Send(Message{T: "event", Event: map[string]string{"guest": state, "reason": reason}})
	}
	turn := g.turn.allow(ip, g.cfg.Now())
	sc := SessionConfig{StallTimeout: g.cfg.StallTimeout}
	if g.cfg.ICE != nil {
		sc.ICEServers = g.cfg.ICE(ip, local, turn)
	}
	if !turn {
		status("notice", fmt.Sprintf("no relay credentials: at most %d a minute from your address", g.cfg.TURNPerMinute))
	}
	ctx, cancel := context.WithCancel(g.ctx)
	defer cancel()
	served := make(chan struct{})
	defer func() { <-served }()
	go func() {
		defer close(served)
		defer cancel()
		p.Serve(ctx)
	}()
	status("calling", handle)
	err = g.cfg.Caller.CallGuest(ctx, GuestCall{Handle: handle, Page: p, Session: sc, Client: ip, Status: status})
	reason := "hung up"
	if err != nil {
		reason = err.Error()
	}
	status("ended", reason)
	g.cfg.Logger.Info("guest call ended", "ip", ip, "handle", handle, "reason", reason)
	// Close the WebSocket gracefully, with why: the page answers the close
	// frame, which ends Serve. Closing the socket at once while the page
	// still sends (stats, candidates) would reset the connection and lose
	// the close frame.
	// The close frame goes behind the "ended" event: written before it, the
	// browser would fail the socket and never read why.
	p.CloseAfterQueued(reason)
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-served:
	case <-t.C:
	}
	p.Close()
}

// truncate cuts s to at most n bytes at a rune boundary: a close frame's
// reason must be valid UTF-8, or the browser fails the socket.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ipLimiter is a token bucket of perMinute (a burst of as many) per IP,
// holding at most maxGuestLimiterEntries addresses: when full it forgets
// the full buckets (which behave like new ones), and refuses a new address
// if none is.
type ipLimiter struct {
	perMinute int
	mu        sync.Mutex
	m         map[netip.Addr]*rate.Limiter
}

func newIPLimiter(perMinute int) *ipLimiter {
	return &ipLimiter{perMinute: perMinute, m: map[netip.Addr]*rate.Limiter{}}
}

func (l *ipLimiter) allow(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[ip]
	if !ok {
		if len(l.m) >= maxGuestLimiterEntries {
			for k, v := range l.m {
				if v.TokensAt(now) >= float64(l.perMinute) {
					delete(l.m, k)
				}
			}
			if len(l.m) >= maxGuestLimiterEntries {
				return false
			}
		}
		lim = rate.NewLimiter(rate.Limit(float64(l.perMinute)/60), l.perMinute)
		l.m[ip] = lim
	}
	return lim.AllowN(now, 1)
}
