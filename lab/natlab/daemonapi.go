package natlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/parley-net/parley/node"
)

// apiTimeout bounds one request to a daemon's control API.
const apiTimeout = 2 * time.Second

// daemonCall is what natlab reads of a call in a daemon's control API
// (GET /v1/calls, the list `parley calls` prints): only the wire fields,
// decoded here rather than with node's types, so that the lab measures
// whatever engine the daemon runs.
type daemonCall struct {
	ID        string         `json:"id"`
	Peer      string         `json:"peer"` // the other handle
	Direction node.Direction `json:"direction"`
	State     string         `json:"state"`  // "ended" once over
	Reason    string         `json:"reason"` // why it ended
	StartedMS int64          `json:"started_ms"`
	EndedMS   int64          `json:"ended_ms"` // Unix milliseconds, the daemon's clock
}

// callEnded is the state of a call that is over, on the wire.
const callEnded = "ended"

// daemonCalls lists the current and recent calls of the daemon serving
// home, through its control socket (a file, reachable from the default
// namespace).
func daemonCalls(ctx context.Context, home string) ([]daemonCall, error) {
	sock := filepath.Join(home, node.SocketFile)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://parley/v1/calls", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calls of %s: %w", home, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("calls of %s: %w", home, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("calls of %s: %s: %s", home, resp.Status, body)
	}
	var out []daemonCall
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("calls of %s: %w", home, err)
	}
	return out, nil
}

// incomingFrom returns the latest call from handle among calls that
// started no later than before (Unix ms), if any.
func incomingFrom(calls []daemonCall, handle string, before int64) (daemonCall, bool) {
	var best daemonCall
	found := false
	for _, c := range calls {
		if c.Direction != node.CallIncoming || c.Peer != handle || c.StartedMS > before {
			continue
		}
		if !found || c.StartedMS > best.StartedMS {
			best, found = c, true
		}
	}
	return best, found
}

// waitAPI waits (bounded by timeout) until the daemon serving home
// answers on its control socket: "ready" is printed just before it
// serves.
func waitAPI(ctx context.Context, home string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := daemonCalls(ctx, home)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("control API not answering within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
