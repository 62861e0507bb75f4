package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ErrPageGone is returned for a request to a page whose WebSocket closed.
var ErrPageGone = errors.New("browser: page gone")

// Page is one WebSocket connection to a web app page. Its sessions live as
// long as it does: a tab that closes ends them.
type Page struct {
	conn *websocket.Conn
	log  *slog.Logger
	// decode parses one message from the page: DecodeMessage, or
	// DecodeGuestMessage for a guest's page.
	decode func([]byte) (*Message, error)
	out    chan frame
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // the writer

	// mu guards the fields below.
	mu       sync.Mutex
	sessions map[string]*Session
	pending  map[uint64]chan *Message
	nextID   uint64
	nextReq  uint64
}

// NewPage takes an upgraded WebSocket. Call Serve to run it.
func NewPage(conn *websocket.Conn, log *slog.Logger) *Page {
	if log == nil {
		log = slog.Default()
	}
	conn.SetReadLimit(MaxMessage)
	p := &Page{conn: conn, log: log, decode: DecodeMessage, out: make(chan frame, maxQueued), done: make(chan struct{}),
		sessions: map[string]*Session{}, pending: map[uint64]chan *Message{}}
	p.wg.Add(1)
	go p.writeLoop()
	return p
}

// Serve reads the page's messages until its WebSocket closes or ctx ends,
// then ends every session of the page and returns.
func (p *Page) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, p.Close)
	defer stop()
	defer p.Close()
	for {
		_, b, err := p.conn.ReadMessage()
		if err != nil {
			return err
		}
		m, err := p.decode(b)
		if err != nil {
			p.log.Warn("browser page sent a bad message", "err", err)
			return err
		}
		p.dispatch(m)
	}
}

// Done is closed when the page is gone.
func (p *Page) Done() <-chan struct{} { return p.done }

// Close closes the WebSocket and ends every session of the page.
func (p *Page) Close() {
	p.once.Do(func() {
		close(p.done)
		p.conn.Close()
		p.mu.Lock()
		sessions := p.sessions
		p.sessions = map[string]*Session{}
		pending := p.pending
		p.pending = map[uint64]chan *Message{}
		p.mu.Unlock()
		for _, ch := range pending {
			close(ch)
		}
		for _, s := range sessions {
			s.ended()
		}
	})
	p.wg.Wait()
}

// Send queues an app message for the page; false if the page is gone or
// that far behind (then it is closed: it reloads and catches up).
func (p *Page) Send(m Message) bool {
	b, err := json.Marshal(m)
	if err != nil {
		p.log.Error("browser: encode message", "err", err)
		return false
	}
	select {
	case <-p.done:
		return false
	default:
	}
	select {
	case p.out <- frame{b: b}:
		return true
	default:
		p.log.Warn("browser page too far behind; closing it")
		go p.Close()
		return false
	}
}

// frame is one message for the page, or (close) the close frame that
// ends it, with its reason.
type frame struct {
	b     []byte
	close bool
}

// CloseAfterQueued queues a normal close frame with reason (at most 123
// bytes: the frame's limit) behind the messages already queued, so that
// the page reads them all and then why the server ended. It returns at
// once; nothing sent after it reaches the page.
func (p *Page) CloseAfterQueued(reason string) {
	select {
	case p.out <- frame{b: websocket.FormatCloseMessage(websocket.CloseNormalClosure, truncate(reason, 123)), close: true}:
	case <-p.done:
	default: // the queue is full: the page is too far behind to read it
		go p.Close()
	}
}

func (p *Page) writeLoop() {
	defer p.wg.Done()
	closed := false
	for {
		select {
		case f := <-p.out:
			if closed {
				continue // after the close frame, nothing more is sent
			}
			p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			var err error
			if f.close {
				closed = true
				err = p.conn.WriteControl(websocket.CloseMessage, f.b, time.Now().Add(10*time.Second))
			} else {
				err = p.conn.WriteMessage(websocket.TextMessage, f.b)
			}
			if err != nil {
				go p.Close()
				return
			}
		case <-p.done:
			return
		}
	}
}

// request sends m with a new request number and waits for the reply.
func (p *Page) request(ctx context.Context, m Message) (*Message, error) {
	ch := make(chan *Message, 1)
	p.mu.Lock()
	if len(p.pending) >= maxPendingRequests {
		p.mu.Unlock()
		return nil, fmt.Errorf("browser: %d requests awaiting the page", maxPendingRequests)
	}
	p.nextReq++
	m.Req = p.nextReq
	p.pending[m.Req] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, m.Req)
		p.mu.Unlock()
	}()
	if !p.Send(m) {
		return nil, ErrPageGone
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, ErrPageGone
		}
		if r.Error != "" {
			return nil, fmt.Errorf("browser: %s: %s", m.T, r.Error)
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.done:
		return nil, ErrPageGone
	}
}

func (p *Page) dispatch(m *Message) {
	p.mu.Lock()
	if m.T == "sdp" {
		ch := p.pending[m.Req]
		delete(p.pending, m.Req)
		p.mu.Unlock()
		if ch != nil {
			ch <- m
		}
		return
	}
	s := p.sessions[m.ID]
	p.mu.Unlock()
	if s != nil {
		s.fromPage(m)
	}
}

// NewSession creates a peer connection in the page with the given ICE
// configuration and the page's microphone as its audio.
func (p *Page) NewSession(cfg SessionConfig) (*Session, error) {
	if len(cfg.ICEServers) > maxICEServers {
		return nil, fmt.Errorf("browser: %d ICE servers (at most %d)", len(cfg.ICEServers), maxICEServers)
	}
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return nil, ErrPageGone
	default:
	}
	if len(p.sessions) >= MaxSessions {
		p.mu.Unlock()
		return nil, fmt.Errorf("browser: the page has %d peer connections already", MaxSessions)
	}
	p.nextID++
	s := newSession(p, "pc"+strconv.FormatUint(p.nextID, 10), cfg)
	p.sessions[s.id] = s
	p.mu.Unlock()
	if !p.Send(Message{T: "pc", ID: s.id, ICE: cfg.ICEServers, RelayOnly: cfg.RelayOnly}) {
		s.Close()
		return nil, ErrPageGone
	}
	return s, nil
}

func (p *Page) forget(s *Session) {
	p.mu.Lock()
	if p.sessions[s.id] == s {
		delete(p.sessions, s.id)
	}
	p.mu.Unlock()
}
