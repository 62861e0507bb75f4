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
	"path/filepath"
	"strconv"
	"time"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node/netcheck"
)

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
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxRequestBody)).Decode(&e); err != nil || e.Error == "" {
			// Not an answer of ours (no such route): name the request.
			e.Error = fmt.Sprintf("daemon answered %s %s with %q", method, path, resp.Status)
		}
		return apiErrorOf(resp.StatusCode, e)
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
