package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node/netcheck"
)

// SocketFile is the control API's unix socket under a node's home.
const SocketFile = "parley.sock"

// The control API: HTTP+JSON on a unix socket only the owner can open
// (mode 0600 in a 0700 home). Errors are {"error": "..."} with a status code.
//
//	GET  /v1/status                  Status
//	GET  /v1/whois/{handle}          Whois
//	POST /v1/chat/send               {"to","text"} -> SendResult
//	GET  /v1/chat/history/{handle}   ?limit=N -> []Message
//	GET  /v1/events                  newline-delimited JSON Events, until closed
//	POST /v1/calls                   {"to","audio":AudioSpec} -> CallInfo
//	GET  /v1/calls                   []CallInfo
//	GET  /v1/calls/{id}              CallInfo with statistics
//	POST /v1/call/answer             {"id","audio"} -> CallInfo ("" id: the ringing call)
//	POST /v1/call/reject             {"id"} -> CallInfo
//	POST /v1/call/hangup             {"id"} -> CallInfo
//	POST /v1/link                    -> {"code"}: a one-time pairing code
//	GET  /v1/devices                 []discovery.Device
//	POST /v1/devices/unlink          {"peer"} -> []discovery.Device
//	POST /v1/groups                  {"name","members"} -> Group
//	GET  /v1/groups                  []Group
const maxRequestBody = 64 << 10

// Status describes a running node.
type Status struct {
	Handle      string   `json:"handle"`
	PeerID      string   `json:"peer_id"`
	Fingerprint string   `json:"fingerprint"`
	Addrs       []string `json:"addrs"`
	Peers       int      `json:"peers"`
	// Online is whether the node reaches at least one supernode; State
	// says the same as "online" or "offline".
	Online bool   `json:"online"`
	State  string `json:"state"`
	// Since is when the node entered State.
	Since time.Time `json:"since"`
	// OfflineReason, when offline, names the addresses tried, what each
	// answered and how long the last attempt took.
	OfflineReason string `json:"offline_reason,omitempty"`
	// Supernodes is how many supernodes the node is connected to.
	Supernodes int `json:"supernodes"`
}

// Status reports who and where the node is, and whether it is online.
func (n *Node) Status() Status {
	net := n.net.get()
	st := Status{Handle: n.id.Handle(), PeerID: n.ID().String(), Fingerprint: n.id.Fingerprint(), Peers: len(n.host.Network().Peers()),
		Online: net.state == stateOnline, State: net.state.String(), Since: net.since, OfflineReason: net.reason,
		Supernodes: n.supernodesConnected()}
	for _, a := range n.host.Addrs() {
		st.Addrs = append(st.Addrs, a.String()+"/p2p/"+n.ID().String())
	}
	return st
}

// ServeAPI serves the control API on home/parley.sock until ctx ends.
func (n *Node) ServeAPI(ctx context.Context) error {
	path := filepath.Join(n.cfg.Home, SocketFile)
	os.Remove(path) // we hold the home lock, so a socket here is stale
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	srv := &http.Server{Handler: n.apiHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err = srv.Serve(l)
	os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/whois/{handle}", func(w http.ResponseWriter, r *http.Request) {
		who, err := n.Resolve(r.Context(), r.PathValue("handle"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, who)
	})
	mux.HandleFunc("POST /v1/chat/send", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			To   string `json:"to"`
			Text string `json:"text"`
		}
		if !readJSONLimit(w, r, &req, maxSendRequest) {
			return
		}
		res, err := n.Send(r.Context(), req.To, req.Text)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, userResult(res))
	})
	mux.HandleFunc("GET /v1/chat/history/{handle}", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		h, err := n.History(r.Context(), r.PathValue("handle"), limit)
		if err != nil {
			writeErr(w, err)
			return
		}
		if h == nil {
			h = []Message{}
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("POST /v1/calls", func(w http.ResponseWriter, r *http.Request) {
		var req callRequest
		if !readJSON(w, r, &req) {
			return
		}
		if err := checkPolicy(req.Path, req.Profile); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
			return
		}
		opts, err := req.Audio.Open()
		if err != nil {
			writeErr(w, err)
			return
		}
		opts.Path, opts.Profile = req.Path, req.Profile
		// The call outlives the request: it ends on hangup, not when the
		// client disconnects.
		c, err := n.Call(n.ctx, req.To, opts)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, userCall(c.Info()))
	})
	mux.HandleFunc("GET /v1/calls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Calls())
	})
	mux.HandleFunc("GET /v1/calls/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, err := n.FindCall(r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, userCall(c.Info()))
	})
	mux.HandleFunc("POST /v1/call/{verb}", func(w http.ResponseWriter, r *http.Request) {
		var req callRequest
		if !readJSON(w, r, &req) {
			return
		}
		c, err := n.FindCall(req.ID)
		if err != nil {
			writeErr(w, err)
			return
		}
		switch r.PathValue("verb") {
		case "answer":
			opts, err := req.Audio.Open()
			if err == nil {
				err = c.Answer(n.ctx, opts)
			}
			if err != nil {
				writeErr(w, err)
				return
			}
		case "reject":
			if err := c.Reject(); err != nil {
				writeErr(w, err)
				return
			}
		case "hangup":
			c.Hangup()
		default:
			writeJSON(w, http.StatusNotFound, apiError{Error: "unknown call verb " + r.PathValue("verb")})
			return
		}
		writeJSON(w, http.StatusOK, userCall(c.Info()))
	})
	mux.HandleFunc("GET /v1/netcheck", func(w http.ResponseWriter, r *http.Request) {
		rep, err := n.Netcheck(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /v1/ping/{handle}", func(w http.ResponseWriter, r *http.Request) {
		res, err := n.Ping(r.Context(), r.PathValue("handle"))
		if err != nil && res == nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res) // a probe that failed says why in its result
	})
	mux.HandleFunc("POST /v1/link", func(w http.ResponseWriter, r *http.Request) {
		code, err := n.LinkCode()
		if err != nil {
			writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"code": code})
	})
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.publishedDevices(r.Context()))
	})
	mux.HandleFunc("POST /v1/devices/unlink", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Peer string `json:"peer"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		if _, err := n.Unlink(r.Context(), req.Peer); err != nil {
			writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, n.Devices())
	})
	mux.HandleFunc("POST /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name    string   `json:"name"`
			Members []string `json:"members"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		g, err := n.CreateGroup(r.Context(), req.Name, req.Members)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, g)
	})
	mux.HandleFunc("GET /v1/groups", func(w http.ResponseWriter, r *http.Request) {
		gs, err := n.Groups(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		if gs == nil {
			gs = []Group{}
		}
		writeJSON(w, http.StatusOK, gs)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		ch, stop := n.Subscribe()
		defer stop()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		if fl != nil {
			fl.Flush()
		}
		enc := json.NewEncoder(w)
		for {
			select {
			case <-r.Context().Done():
				return
			case e, ok := <-ch:
				if !ok {
					return
				}
				if e.Call != nil {
					ci := userCall(*e.Call)
					e.Call = &ci
				}
				if enc.Encode(e) != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
			}
		}
	})
	return mux
}

// publishedDevices is the account's device list as the DHT has it, when
// that is newer than this device's copy: a device unlinked from another one
// learns it here, and does not list itself any more. The local copy answers
// when the DHT does not, within a few seconds.
func (n *Node) publishedDevices(ctx context.Context) []discovery.Device {
	mine, err := discovery.ParseHandleRecord(n.id.Record())
	if err != nil {
		return n.Devices()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rec, _, err := discovery.Resolve(ctx, n.dht, mine.Handle)
	if err != nil || !bytes.Equal(rec.Account, mine.Account) || rec.Seq <= mine.Seq {
		return mine.Devices
	}
	return rec.Devices
}

type callRequest struct {
	ID      string    `json:"id"`
	To      string    `json:"to"`
	Audio   AudioSpec `json:"audio"`
	Path    string    `json:"path,omitempty"`
	Profile string    `json:"profile,omitempty"`
}

// errRequestTooLarge is a request body over its handler's limit.
var errRequestTooLarge = errors.New("request body too large")

// maxSendRequest bounds a chat send request: a message of MaxBodyBytes with
// every byte escaped in JSON (at most 6 bytes each), and room for the rest.
const maxSendRequest = 6*MaxBodyBytes + 1<<10

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	return readJSONLimit(w, r, v, maxRequestBody)
}

// readJSONLimit decodes a request body of at most limit bytes into v, or
// answers the request with the error. A chat send over the limit holds a
// message over MaxBodyBytes, and says so.
func readJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err == nil && len(b) > limit {
		if limit == maxSendRequest {
			writeErr(w, fmt.Errorf("%w: the request is over %d KiB, and a message is at most %d bytes (16 KiB)", ErrBadMessage, limit>>10, MaxBodyBytes))
			return false
		}
		err = fmt.Errorf("%w: over %d KiB", errRequestTooLarge, limit>>10)
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
	}
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, errRequestTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, code, apiError{Error: "bad request: " + err.Error()})
		return false
	}
	return true
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, discovery.ErrNoSuchHandle):
		code = http.StatusNotFound
	case errors.Is(err, discovery.ErrBadHandle), errors.Is(err, ErrBadMessage), errors.Is(err, ErrBadAudio):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNoSuchCall), errors.Is(err, ErrNoSuchGroup):
		code = http.StatusNotFound
	case errors.Is(err, ErrCallState), errors.Is(err, ErrBusy):
		code = http.StatusConflict
	case errors.Is(err, ErrNoDevice), errors.Is(err, ErrNoRelay), errors.Is(err, ErrOffline), errors.Is(err, netcheck.ErrNoTargets):
		code = http.StatusServiceUnavailable
	case errors.Is(err, ErrContactKeyChanged), errors.Is(err, discovery.ErrExpired), errors.Is(err, ErrHeld), errors.Is(err, ErrUnverified):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, kb.ErrLookupFailure):
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, apiError{Error: userText(err)})
}

// ErrorText is an error as a person reads it: the words of libraries below
// us that mean nothing to a user (an empty DHT routing table, peer.ID's
// "<peer.ID 12*abcdef>") are replaced by what they mean here. The control
// API answers with it, and the CLI prints it.
func ErrorText(err error) string { return userText(err) }

func userText(err error) string {
	s := err.Error()
	if errors.Is(err, kb.ErrLookupFailure) {
		s = strings.Replace(s, kb.ErrLookupFailure.Error(),
			"no DHT peer to ask: this daemon is connected to no supernode (check its --bootstrap addresses and the network)", 1)
	}
	return peerText(s)
}

// shortPeerID matches peer.ID.ShortString ("<peer.ID 12*abcdef>"), which
// error texts below us use.
var shortPeerID = regexp.MustCompile(`<peer\.ID [^*>]*\*([^>]*)>`)

// peerText writes the peer IDs in an error text as the rest of the CLI
// does: "…" and the end of the ID.
func peerText(s string) string { return shortPeerID.ReplaceAllString(s, "…$1") }

// userCall is a CallInfo with its reason as a person reads it.
func userCall(ci CallInfo) CallInfo {
	ci.Reason = peerText(ci.Reason)
	return ci
}

// userResult is a SendResult with its error texts as a person reads them.
func userResult(r *SendResult) *SendResult {
	for _, l := range [][]QueuedEntry{r.Queued, r.Refused} {
		for i := range l {
			l[i].Error = peerText(l[i].Error)
		}
	}
	return r
}

// ErrNoDaemon is returned by Dial when no daemon serves the home.
var ErrNoDaemon = errors.New("no parley daemon is running")

// Client talks to a daemon's control API.
type Client struct {
	hc *http.Client
}

// Dial connects to the daemon serving home.
func Dial(home string) (*Client, error) {
	path := filepath.Join(home, SocketFile)
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w for --home %s: start one with 'parley daemon'", ErrNoDaemon, home)
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://parley"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiError
		json.NewDecoder(io.LimitReader(resp.Body, maxRequestBody)).Decode(&e)
		if e.Error == "" {
			// Not an answer of ours (no such route): name the request.
			e.Error = fmt.Sprintf("daemon answered %s %s with %q", method, path, resp.Status)
		}
		return errors.New(e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status asks the daemon who it is.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Whois resolves a handle.
func (c *Client) Whois(ctx context.Context, handle string) (*Whois, error) {
	if err := discovery.ValidHandle(handle); err != nil {
		return nil, err
	}
	var w Whois
	return &w, c.do(ctx, http.MethodGet, "/v1/whois/"+url.PathEscape(handle), nil, &w)
}

// Send sends a chat message.
func (c *Client) Send(ctx context.Context, to, text string) (*SendResult, error) {
	if len(text) > MaxBodyBytes {
		return nil, errTooLong(len(text))
	}
	var r SendResult
	return &r, c.do(ctx, http.MethodPost, "/v1/chat/send", map[string]string{"to": to, "text": text}, &r)
}

// History returns the conversation with a handle.
func (c *Client) History(ctx context.Context, with string, limit int) ([]Message, error) {
	if with == "" {
		return nil, fmt.Errorf("%w \"\": name a handle or #group", discovery.ErrBadHandle)
	}
	var h []Message
	return h, c.do(ctx, http.MethodGet, "/v1/chat/history/"+url.PathEscape(with)+"?limit="+strconv.Itoa(limit), nil, &h)
}

// Call rings every device of a handle.
func (c *Client) Call(ctx context.Context, to string, audio AudioSpec, path, profile string) (*CallInfo, error) {
	var ci CallInfo
	return &ci, c.do(ctx, http.MethodPost, "/v1/calls", callRequest{To: to, Audio: audio, Path: path, Profile: profile}, &ci)
}

// Calls lists current and recent calls.
func (c *Client) Calls(ctx context.Context) ([]CallInfo, error) {
	var out []CallInfo
	return out, c.do(ctx, http.MethodGet, "/v1/calls", nil, &out)
}

// CallInfo returns one call, with statistics.
func (c *Client) CallInfo(ctx context.Context, id string) (*CallInfo, error) {
	var ci CallInfo
	return &ci, c.do(ctx, http.MethodGet, "/v1/calls/"+url.PathEscape(id), nil, &ci)
}

// CallVerb answers, rejects or hangs up a call ("" id: the obvious one).
func (c *Client) CallVerb(ctx context.Context, verb, id string, audio AudioSpec) (*CallInfo, error) {
	var ci CallInfo
	return &ci, c.do(ctx, http.MethodPost, "/v1/call/"+verb, callRequest{ID: id, Audio: audio}, &ci)
}

// Netcheck asks the daemon to measure its network.
func (c *Client) Netcheck(ctx context.Context) (*netcheck.Report, error) {
	var r netcheck.Report
	return &r, c.do(ctx, http.MethodGet, "/v1/netcheck", nil, &r)
}

// Ping asks the daemon to ping every device of handle once.
func (c *Client) Ping(ctx context.Context, handle string) ([]PingResult, error) {
	if err := discovery.ValidHandle(handle); err != nil {
		return nil, err
	}
	var r []PingResult
	return r, c.do(ctx, http.MethodGet, "/v1/ping/"+url.PathEscape(handle), nil, &r)
}

// LinkCode asks the daemon for a pairing code.
func (c *Client) LinkCode(ctx context.Context) (string, error) {
	var out map[string]string
	err := c.do(ctx, http.MethodPost, "/v1/link", struct{}{}, &out)
	return out["code"], err
}

// Devices lists the account's devices.
func (c *Client) Devices(ctx context.Context) ([]discovery.Device, error) {
	var out []discovery.Device
	return out, c.do(ctx, http.MethodGet, "/v1/devices", nil, &out)
}

// Unlink removes a device from the account.
func (c *Client) Unlink(ctx context.Context, peerID string) ([]discovery.Device, error) {
	var out []discovery.Device
	return out, c.do(ctx, http.MethodPost, "/v1/devices/unlink", map[string]string{"peer": peerID}, &out)
}

// CreateGroup makes a group.
func (c *Client) CreateGroup(ctx context.Context, name string, members []string) (*Group, error) {
	var g Group
	return &g, c.do(ctx, http.MethodPost, "/v1/groups", map[string]any{"name": name, "members": members}, &g)
}

// Groups lists the groups.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var out []Group
	return out, c.do(ctx, http.MethodGet, "/v1/groups", nil, &out)
}

// Events streams the daemon's events to fn until ctx ends or fn returns an error.
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://parley/v1/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("daemon event: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("daemon closed the event stream")
}
