package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
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
//	GET  /v1/netcheck                netcheck.Report
//	GET  /v1/ping/{handle}           []PingResult
//	POST /v1/ui/login                -> {"url","addr"}: a one-time login link of the web app
const maxRequestBody = 64 << 10

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

// apiHandler routes the control API: one line a route, each to its own
// handler (api_*.go), so a new route is one line here and a new file.
func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	mux.HandleFunc("GET /v1/whois/{handle}", n.serveWhois)
	mux.HandleFunc("POST /v1/chat/send", n.serveChatSend)
	mux.HandleFunc("GET /v1/chat/history/{handle}", n.serveChatHistory)
	mux.HandleFunc("POST /v1/calls", n.serveCallStart)
	mux.HandleFunc("GET /v1/calls", n.serveCalls)
	mux.HandleFunc("GET /v1/calls/{id}", n.serveCall)
	mux.HandleFunc("POST /v1/call/{verb}", n.serveCallVerb)
	mux.HandleFunc("GET /v1/netcheck", n.serveNetcheck)
	mux.HandleFunc("GET /v1/ping/{handle}", n.servePing)
	mux.HandleFunc("POST /v1/link", n.serveLink)
	mux.HandleFunc("GET /v1/devices", n.serveDevices)
	mux.HandleFunc("POST /v1/devices/unlink", n.serveUnlink)
	mux.HandleFunc("POST /v1/groups", n.serveGroupCreate)
	mux.HandleFunc("GET /v1/groups", n.serveGroups)
	mux.HandleFunc("GET /v1/events", n.serveEvents)
	mux.HandleFunc("POST /v1/ui/login", n.serveUILogin)
	return mux
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

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// An error here is the client gone or its connection broken: the
	// status is sent already, and there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}
