package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/internal/nodetest"
)

// holdCaller is the guest endpoint's far side in these tests: it says the
// call rings and holds it until the page goes (carol refuses at once). The endpoint's limits, not
// the call, are under test here (node/guest_browser_test.go runs a real one).
type holdCaller struct {
	mu    sync.Mutex
	calls []GuestCall
	ended chan string
}

func (h *holdCaller) CallGuest(ctx context.Context, c GuestCall) error {
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
	if c.Handle == "carol" {
		return errors.New("carol takes no guests")
	}
	c.Status("ringing", "1 device(s)")
	<-ctx.Done()
	h.ended <- c.Handle
	return nil
}

type guestRig struct {
	g      *GuestServer
	caller *holdCaller
	clk    *clock.Fake
	turns  []bool
	mu     sync.Mutex
}

func startGuests(t *testing.T, cfg GuestConfig) *guestRig {
	t.Helper()
	nodetest.CheckLeaks(t)
	r := &guestRig{caller: &holdCaller{ended: make(chan string, 64)}, clk: clock.NewFake(time.Unix(1_800_000_000, 0))}
	cfg.Caller, cfg.Now, cfg.Logger = r.caller, r.clk.Now, slog.New(slog.DiscardHandler)
	cfg.ICE = func(client, local netip.Addr, turn bool) []webrtc.ICEServer {
		r.mu.Lock()
		r.turns = append(r.turns, turn)
		r.mu.Unlock()
		return []webrtc.ICEServer{{URLs: []string{"stun:" + local.String() + ":3478"}}}
	}
	g, err := ServeGuests("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.g = g
	t.Cleanup(func() { g.Close() })
	return r
}

func (r *guestRig) base() string { return "http://" + r.g.Addr().String() }

// dial opens a guest WebSocket from the loopback address from, with origin
// as Origin ("" for none). It returns the connection, or the HTTP status
// and body of the refusal.
func (r *guestRig) dial(t *testing.T, from, handle, origin string) (*websocket.Conn, int, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c, resp, err := d.Dial("ws://"+r.g.Addr().String()+"/call/"+handle+"/ws", h)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return c, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return nil, resp.StatusCode, strings.TrimSpace(string(b))
}

// readEvent reads messages until a guest event of state, or fails.
func readEvent(t *testing.T, c *websocket.Conn, state string) map[string]string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %q: %v", state, err)
		}
		var m struct {
			T     string            `json:"t"`
			Event map[string]string `json:"event"`
		}
		if json.Unmarshal(b, &m) == nil && m.T == "event" && m.Event["guest"] == state {
			return m.Event
		}
	}
}

// TestGuestEndedBeforeClose: a call that ends at once (carol refuses)
// tells the page why in an "ended" event and then a close frame with the
// reason, in that order, every time. A close frame written before the
// queued event makes the browser fail the socket (code 1006, no reason),
// and the page cannot say why the call ended.
func TestGuestEndedBeforeClose(t *testing.T) {
	r := startGuests(t, GuestConfig{MaxPerIP: 100, CallsPerMinute: 1000})
	for i := range 40 {
		c, code, body := r.dial(t, "127.0.0.1", "carol", r.base())
		if c == nil {
			t.Fatalf("call %d: refused %d %q", i, code, body)
		}
		if e := readEvent(t, c, "ended"); e["reason"] != "carol takes no guests" {
			t.Fatalf("call %d ended with %q, want carol's refusal", i, e["reason"])
		}
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "carol takes no guests" {
			t.Fatalf("call %d: after the ended event got %v, want a normal close with the reason", i, err)
		}
		c.Close()
	}
}

// TestGuestFloodFromOneIP: one address that opens call after call is
// refused with a reason that says which limit it hit, while a guest at
// another address still gets through.
func TestGuestFloodFromOneIP(t *testing.T) {
	r := startGuests(t, GuestConfig{MaxPerIP: 2, CallsPerMinute: 3})
	origin := r.base()
	var open []*websocket.Conn
	for i := range 2 {
		c, code, body := r.dial(t, "127.0.0.1", "bob", origin)
		if c == nil {
			t.Fatalf("call %d refused: %d %s", i+1, code, body)
		}
		readEvent(t, c, "ringing")
		open = append(open, c)
	}
	if _, code, body := r.dial(t, "127.0.0.1", "bob", origin); code != http.StatusTooManyRequests || !strings.Contains(body, "at most 2 at once") {
		t.Fatalf("a third concurrent call from one address got %d %q, want 429 naming the limit", code, body)
	}
	if c, code, body := r.dial(t, "127.0.0.2", "bob", origin); c == nil {
		t.Fatalf("a guest at another address was refused: %d %s", code, body)
	}
	open[0].Close()
	<-r.caller.ended
	// The slot is free again, but the minute's budget (3) has one call left.
	nodetest.Eventually(t, 5*time.Second, "the slot is released", func() bool {
		r.g.mu.Lock()
		defer r.g.mu.Unlock()
		return r.g.open[netip.MustParseAddr("127.0.0.1")] == 1
	})
	c, code, body := r.dial(t, "127.0.0.1", "bob", origin)
	if c == nil {
		t.Fatalf("the third call of the minute was refused: %d %s", code, body)
	}
	c.Close()
	<-r.caller.ended
	nodetest.Eventually(t, 5*time.Second, "the slot is released", func() bool {
		r.g.mu.Lock()
		defer r.g.mu.Unlock()
		return r.g.open[netip.MustParseAddr("127.0.0.1")] == 1
	})
	if _, code, body := r.dial(t, "127.0.0.1", "bob", origin); code != http.StatusTooManyRequests || !strings.Contains(body, "at most 3 a minute") {
		t.Fatalf("a fourth call in a minute got %d %q, want 429 naming the limit", code, body)
	}
	r.clk.Advance(time.Minute)
	if c, code, body := r.dial(t, "127.0.0.1", "bob", origin); c == nil {
		t.Fatalf("a minute later the address is still refused: %d %s", code, body)
	}
}

// TestGuestTURNLimit: relay credentials are rationed per address; past the
// ration a call still goes (STUN only) and the page is told why.
func TestGuestTURNLimit(t *testing.T) {
	r := startGuests(t, GuestConfig{TURNPerMinute: 1})
	c1, _, _ := r.dial(t, "127.0.0.1", "bob", r.base())
	readEvent(t, c1, "ringing")
	c2, _, _ := r.dial(t, "127.0.0.1", "bob", r.base())
	if c1 == nil || c2 == nil {
		t.Fatal("calls refused")
	}
	if e := readEvent(t, c2, "notice"); !strings.Contains(e["reason"], "no relay credentials") {
		t.Fatalf("notice %q", e["reason"])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.turns) != 2 || !r.turns[0] || r.turns[1] {
		t.Fatalf("TURN allowed per call: %v, want [true false]", r.turns)
	}
}

// TestGuestOrigin: another site's page cannot open a guest call with its
// visitor's browser.
func TestGuestOrigin(t *testing.T) {
	r := startGuests(t, GuestConfig{})
	for _, origin := range []string{"", "http://evil.example", "null", "http://" + r.g.Addr().String() + ".evil.example"} {
		if _, code, body := r.dial(t, "127.0.0.1", "bob", origin); code != http.StatusForbidden {
			t.Fatalf("Origin %q: %d %q, want 403", origin, code, body)
		}
	}
}

// TestGuestEndpointServesNothingElse: the endpoint is the page, its three
// files and the WebSocket; no control API, no app, no other file; every
// answer carries the strict CSP.
func TestGuestEndpointServesNothingElse(t *testing.T) {
	r := startGuests(t, GuestConfig{})
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/call/bob", 200},
		{"GET", "/guest/guest.js", 200},
		{"GET", "/guest/rtc.js", 200},
		{"GET", "/call/bob%2F..%2Fx", 404},
		{"GET", "/call/" + strings.Repeat("a", 65), 404},
		{"GET", "/guest/app.js", 404},
		{"GET", "/guest/index.html", 404},
		{"GET", "/assets/app.js", 404},
		{"GET", "/api/v1/status", 404},
		{"GET", "/api/session", 404},
		{"GET", "/login?token=x", 404},
		{"GET", "/ws", 404},
		{"GET", "/", 404},
		{"POST", "/call/bob", 405},
		{"POST", "/api/call", 404},
	} {
		req, _ := http.NewRequest(tc.method, r.base()+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; script-src 'self';") {
			t.Errorf("%s %s: CSP %q", tc.method, tc.path, csp)
		}
	}
}

// TestGuestBadFrames: an oversize or malformed message ends the guest's
// call and closes its WebSocket.
func TestGuestBadFrames(t *testing.T) {
	r := startGuests(t, GuestConfig{CallsPerMinute: 10})
	for name, msg := range map[string]string{
		"oversize":       `{"t":"error","id":"pc1","error":"` + strings.Repeat("x", MaxGuestMessage) + `"}`,
		"not JSON":       `{"t":`,
		"server's type":  `{"t":"pc","id":"pc1"}`,
		"unknown type":   `{"t":"call","to":"alice"}`,
		"SDP without id": `{"t":"sdp","sdp":"v=0"}`,
	} {
		t.Run(name, func(t *testing.T) {
			c, code, body := r.dial(t, "127.0.0.1", "bob", r.base())
			if c == nil {
				t.Fatalf("refused: %d %s", code, body)
			}
			readEvent(t, c, "ringing")
			if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-r.caller.ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the call did not end")
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatal("the WebSocket stayed open")
					}
					break
				}
			}
		})
	}
}

func TestDecodeGuestMessage(t *testing.T) {
	if _, err := DecodeGuestMessage([]byte(`{"t":"sdp","req":1,"sdp":"` + strings.Repeat("a", MaxGuestMessage) + `"}`)); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("oversize message: %v", err)
	}
	if _, err := DecodeGuestMessage([]byte(`{"t":"sdp","req":1,"sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeGuestMessage(f *testing.F) {
	f.Add([]byte(`{"t":"sdp","req":3,"sdp":"v=0"}`))
	f.Add([]byte(`{"t":"cand","id":"pc1","cand":""}`))
	f.Add([]byte(`{"t":"state","id":"pc1","state":"connected"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeGuestMessage(b)
		if err != nil {
			return
		}
		if len(b) > MaxGuestMessage || !fromPage[m.T] || m.ICE != nil || m.Event != nil {
			t.Fatalf("accepted %+v", m)
		}
	})
}

// TestGuestHTTPS: with a certificate the endpoint is HTTPS only (a browser
// gives the microphone to secure pages), and a certificate without its key
// is an error at start.
func TestGuestHTTPS(t *testing.T) {
	nodetest.CheckLeaks(t)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	if _, err := ServeGuests("127.0.0.1:0", GuestConfig{Caller: &holdCaller{}, CertFile: certFile}); err == nil {
		t.Fatal("a certificate without its key was taken")
	}
	g, err := ServeGuests("127.0.0.1:0", GuestConfig{Caller: &holdCaller{}, CertFile: certFile, KeyFile: keyFile, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if !strings.HasPrefix(g.URL(), "https://") {
		t.Fatalf("URL %s", g.URL())
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(g.URL() + "/call/bob")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET over HTTPS: %d", resp.StatusCode)
	}
	plain := &http.Transport{}
	defer plain.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: plain}).Get("http://" + g.Addr().String() + "/call/bob"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("the page was served over plain HTTP too")
		}
	}
}

// TestTruncateAtRune: a close reason cut to the frame's limit stays valid
// UTF-8 (the browser fails a socket whose close reason is not).
func TestTruncateAtRune(t *testing.T) {
	s := strings.Repeat("é", 100) // 200 bytes
	got := truncate(s, 123)
	if len(got) > 123 || !utf8.ValidString(got) || got != strings.Repeat("é", 61) {
		t.Fatalf("truncate to 123 bytes gave %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
