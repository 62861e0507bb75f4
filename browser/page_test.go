package browser

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-net/parley/internal/clock"
	"github.com/parley-net/parley/media"
)

// pagePair is a Page served over a real WebSocket, and the client end a
// test plays the browser's part on.
func pagePair(t *testing.T) (*Page, *websocket.Conn) {
	t.Helper()
	pages := make(chan *Page, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		p := NewPage(c, nil)
		pages <- p
		p.Serve(context.Background())
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return <-pages, client
}

func readMsg(t *testing.T, c *websocket.Conn) Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m Message
	if err := c.ReadJSON(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSessionOverWebSocket(t *testing.T) {
	p, page := pagePair(t)
	s, err := p.NewSession(SessionConfig{RelayOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan media.State, 8)
	cands := make(chan string, 8)
	s.OnState(func(st media.State) { states <- st })
	s.OnLocalCandidate(func(c string) { cands <- c })
	if m := readMsg(t, page); m.T != "pc" || m.ID != s.ID() || !m.RelayOnly {
		t.Fatalf("first message %+v, want pc for %s, relay only", m, s.ID())
	}

	// An offer request, answered by the page.
	offer := make(chan string, 1)
	go func() {
		sdp, err := s.CreateOffer(context.Background())
		if err != nil {
			sdp = "error: " + err.Error()
		}
		offer <- sdp
	}()
	req := readMsg(t, page)
	if req.T != "offer" || req.Req == 0 {
		t.Fatalf("request %+v", req)
	}
	page.WriteJSON(Message{T: "sdp", Req: req.Req, SDP: "v=0 page offer"})
	if got := <-offer; got != "v=0 page offer" {
		t.Fatalf("CreateOffer = %q", got)
	}

	// The page's candidates and states reach the callbacks, in order.
	c := `{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"}`
	page.WriteJSON(Message{T: "cand", ID: s.ID(), Cand: &c})
	page.WriteJSON(Message{T: "state", ID: s.ID(), State: "connected"})
	page.WriteJSON(Message{T: "stats", ID: s.ID(), Stats: &PageStats{PacketsIn: 5, ReceivedS: 0.1, LocalType: "host"}})
	if got := <-cands; got != c {
		t.Fatalf("candidate %q", got)
	}
	if st := <-states; st != media.StateConnected {
		t.Fatalf("state %v", st)
	}
	select {
	case <-s.FirstAudio():
	case <-time.After(5 * time.Second):
		t.Fatal("no first audio after the page reported packets")
	}
	if s.PacketsReceived() != 5 || s.Stats().Path.LocalType != "host" {
		t.Fatalf("stats %+v", s.Stats())
	}

	// A remote candidate goes to the page; a malformed one does not.
	if err := s.AddRemoteCandidate(c); err != nil {
		t.Fatal(err)
	}
	if m := readMsg(t, page); m.T != "cand" || m.Cand == nil || *m.Cand != c {
		t.Fatalf("remote candidate message %+v", m)
	}
	if err := s.AddRemoteCandidate("{"); err == nil {
		t.Fatal("a malformed candidate was passed on")
	}

	// The page goes away: the session ends, and says so.
	page.Close()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived its page")
	}
	if st := <-states; st != media.StateClosed {
		t.Fatalf("last state %v, want closed", st)
	}
	if _, err := s.RestartICE(context.Background()); err == nil {
		t.Fatal("a restart on a closed session succeeded")
	}
}

func TestPageLimits(t *testing.T) {
	p, page := pagePair(t)
	for range MaxSessions {
		if _, err := p.NewSession(SessionConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.NewSession(SessionConfig{}); err == nil {
		t.Fatalf("session %d of a page accepted", MaxSessions+1)
	}
	// A message breaking the protocol closes the page.
	page.WriteMessage(websocket.TextMessage, []byte(`{"t":"pc","id":"x"}`))
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a page that sent a bad message stayed open")
	}
}

// A connected page that receives nothing for StallTimeout reads as
// disconnected (what a pion session's ICE says after as long), and as
// connected again when packets come back.
func TestSessionStallReadsDisconnected(t *testing.T) {
	p, page := pagePair(t)
	clk := clock.NewFake(time.Unix(1000, 0))
	s, err := p.NewSession(SessionConfig{StallTimeout: 1500 * time.Millisecond, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan media.State, 8)
	s.OnState(func(st media.State) { states <- st })
	readMsg(t, page) // pc
	// Each report is read before the clock moves: a stats message is
	// followed by a candidate, whose callback says it was handled.
	cands := make(chan string, 8)
	s.OnLocalCandidate(func(c string) { cands <- c })
	c := `{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"}`
	report := func(packets uint64) {
		t.Helper()
		page.WriteJSON(Message{T: "stats", ID: s.ID(), Stats: &PageStats{PacketsIn: packets, ReceivedS: 1}})
		page.WriteJSON(Message{T: "cand", ID: s.ID(), Cand: &c})
		select {
		case <-cands:
		case <-time.After(5 * time.Second):
			t.Fatal("the page's report was not handled")
		}
	}
	expect := func(want media.State) {
		t.Helper()
		select {
		case st := <-states:
			if st != want {
				t.Fatalf("state %v, want %v", st, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no state change to %v", want)
		}
	}
	noChange := func() {
		t.Helper()
		select {
		case st := <-states:
			t.Fatalf("state changed to %v", st)
		default:
		}
	}
	page.WriteJSON(Message{T: "state", ID: s.ID(), State: "connected"})
	expect(media.StateConnected)
	report(10)
	clk.Advance(time.Second)
	report(10) // a second without a packet: still connected
	noChange()
	clk.Advance(600 * time.Millisecond)
	report(10) // 1.6 s: the path is dead
	expect(media.StateDisconnected)
	if s.Stats().State != media.StateDisconnected {
		t.Fatalf("stats state %v", s.Stats().State)
	}
	report(12) // packets again
	expect(media.StateConnected)
	// A page that says disconnected is disconnected, stall or not.
	page.WriteJSON(Message{T: "state", ID: s.ID(), State: "disconnected"})
	expect(media.StateDisconnected)
	// Connected again (after an ICE restart, say): the new path gets its
	// own StallTimeout before its silence counts.
	clk.Advance(5 * time.Second)
	page.WriteJSON(Message{T: "state", ID: s.ID(), State: "connected"})
	expect(media.StateConnected)
	clk.Advance(time.Second)
	report(12)
	noChange()
}

// The pairs a page's reports name reach OnPathChange once each, in order,
// as a pion session's selected pairs do.
func TestSessionPathChanges(t *testing.T) {
	p, page := pagePair(t)
	s, err := p.NewSession(SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	readMsg(t, page) // pc
	paths := make(chan media.Path, 8)
	host := PageStats{PacketsIn: 1, LocalType: "host", RemoteType: "host", Local: "127.0.0.1:1000", Remote: "127.0.0.1:2000", Protocol: "udp"}
	relay := PageStats{PacketsIn: 2, LocalType: "relay", RemoteType: "host", Local: "127.0.0.2:3000", Remote: "127.0.0.1:2000",
		Protocol: "udp", RelayURL: "turn:127.0.0.2:3478?transport=udp", RelayProtocol: "udp"}
	page.WriteJSON(Message{T: "stats", ID: s.ID(), Stats: &PageStats{}}) // no pair yet
	page.WriteJSON(Message{T: "stats", ID: s.ID(), Stats: &host})
	// Registered late: the pair named before comes at once.
	for deadline := time.Now().Add(5 * time.Second); s.PacketsReceived() != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the page's report was not read")
		}
		time.Sleep(time.Millisecond) // the report is read on the page's goroutine
	}
	s.OnPathChange(func(p media.Path) { paths <- p })
	page.WriteJSON(Message{T: "stats", ID: s.ID(), Stats: &host}) // the same pair: nothing
	page.WriteJSON(Message{T: "stats", ID: s.ID(), Stats: &relay})
	want := []media.Path{pathOf(host), {LocalType: "relay", RemoteType: "host", Local: "127.0.0.2:3000", Remote: "127.0.0.1:2000",
		Protocol: "udp", RelayServer: "turn:127.0.0.2:3478?transport=udp", RelayProtocol: "udp"}}
	for i, w := range want {
		select {
		case got := <-paths:
			if got != w {
				t.Fatalf("path %d: %+v, want %+v", i, got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("path %d did not come", i)
		}
	}
	select {
	case got := <-paths:
		t.Fatalf("an extra path %+v", got)
	case <-time.After(100 * time.Millisecond): // nothing more is due; a short look for a stray one
	}
}
