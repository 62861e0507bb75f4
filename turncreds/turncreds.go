// Package turncreds is the libp2p protocol through which an authenticated
// peer obtains TURN REST credentials (internal/turnrest) for a relay: the
// frame, its decoder and the client (Fetch). The relays' side of it, which
// issues the credentials, is internal/turnrelay's CredentialService; a
// node needs only this package, never the TURN server.
//
// Protocol (/parley/turn/1.0.0): the client opens a stream and
// reads; the server writes one frame and closes. The frame is
// internal/wire's (4-byte big-endian length, then JSON), at most 4 KiB:
//
//	{"urls":["turn:203.0.113.7:3479?transport=udp", ...],
//	 "username":"<expiry>:<peer ID>","credential":"<base64>","ttl_s":21600}
//
// or, when refused, {"error":"rate limited: ..."}, never both. Limits the
// decoder enforces: 1 to 8 URLs, each at most 300 bytes of the form
// turn[s]:HOST:PORT[?transport=udp|tcp]; a username turnrest accepts; a
// credential of 1 to 64 printable ASCII bytes; ttl_s from 1 to 604800
// (7 days); an error of at most 256 printable ASCII bytes. Unknown fields
// and trailing bytes are refused. The server answers within 10 s, only over
// a direct (non-circuit) connection, rate-limited per peer ID and per
// client IP, and names in the URLs the IP address the client reached it at
// unless it is configured with a public host name (see
// internal/turnrelay.CredentialConfig).
package turncreds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/turnrest"
	"github.com/parley-net/parley/internal/wire"
)

// Protocol is the libp2p protocol that hands TURN credentials to
// authenticated peers (see the package comment for the frame).
const Protocol = "/parley/turn/1.0.0"

// Frame limits.
const (
	// MaxFrame bounds a frame's payload.
	MaxFrame         = 4 << 10
	maxCredURLs      = 8
	maxCredURLLen    = 300
	maxCredentialLen = 64
	maxCredErrorLen  = 256
	// MaxTTL bounds a frame's ttl_s.
	MaxTTL = 7 * 24 * time.Hour
	// StreamTimeout bounds one request, on either side.
	StreamTimeout = 10 * time.Second
)

// ErrRefused is returned by Fetch when the server answered with
// an error frame.
var ErrRefused = errors.New("TURN credentials refused")

// Frame is the one frame the server writes on Protocol:
// either credentials (URLs, Username, Credential, TTLSeconds) or Error.
type Frame struct {
	URLs       []string `json:"urls,omitempty"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
	TTLSeconds int64    `json:"ttl_s,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// DecodeFrame decodes and validates a frame's payload: strict
// JSON (no unknown fields, nothing trailing), then the limits in the package
// comment.
func DecodeFrame(b []byte) (*Frame, error) {
	var f Frame
	if err := wire.DecodeJSON(b, &f); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("credential frame: %w", err)
	}
	return &f, nil
}

func (f *Frame) validate() error {
	if f.Error != "" {
		if len(f.URLs) != 0 || f.Username != "" || f.Credential != "" || f.TTLSeconds != 0 {
			return errors.New("error frame carries credentials")
		}
		if len(f.Error) > maxCredErrorLen || !printable(f.Error) {
			return errors.New("error text is too long or not printable ASCII")
		}
		return nil
	}
	if len(f.URLs) == 0 || len(f.URLs) > maxCredURLs {
		return fmt.Errorf("%d URLs (want 1 to %d)", len(f.URLs), maxCredURLs)
	}
	for _, u := range f.URLs {
		if err := CheckURL(u); err != nil {
			return err
		}
	}
	if _, _, err := turnrest.ParseUsername(f.Username); err != nil {
		return err
	}
	if f.Credential == "" || len(f.Credential) > maxCredentialLen || !printable(f.Credential) {
		return errors.New("credential is empty, too long or not printable ASCII")
	}
	if f.TTLSeconds <= 0 || f.TTLSeconds > int64(MaxTTL/time.Second) {
		return fmt.Errorf("ttl_s %d outside 1 to %d", f.TTLSeconds, int64(MaxTTL/time.Second))
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// CheckURL accepts RFC 7065 URIs of the form
// turn[s]:HOST:PORT[?transport=udp|tcp], HOST a name or an IP literal
// (IPv6 in brackets).
func CheckURL(u string) error {
	bad := func(why string) error { return fmt.Errorf("TURN URL %.80q: %s", u, why) }
	if len(u) > maxCredURLLen {
		return bad("too long")
	}
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || scheme != "turn" && scheme != "turns" {
		return bad("scheme is not turn or turns")
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if query != "" && query != "transport=udp" && query != "transport=tcp" {
		return bad("query is not transport=udp or transport=tcp")
	}
	if scheme == "turns" && query == "transport=udp" {
		return bad("turns over UDP (DTLS) is not offered")
	}
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return bad("no HOST:PORT")
	}
	if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 || p[0] == '0' {
		return bad("bad port")
	}
	if strings.Contains(hostport, "[") {
		if a, err := netip.ParseAddr(h); err != nil || !a.Is6() || a.Zone() != "" {
			return bad("bad IPv6 literal")
		}
		return nil
	}
	if h == "" || len(h) > 253 {
		return bad("bad host")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return bad("bad host")
		}
	}
	return nil
}

// Credentials are TURN credentials fetched from a relay.
type Credentials struct {
	// URLs are turn: and turns: URIs (RFC 7065) of the relay.
	URLs     []string
	Username string
	Password string
	// Expires is when the relay stops accepting them, by the local clock.
	Expires time.Time
}

// Fetch asks relay, a peer h can reach, for TURN credentials
// over Protocol. A refusal is an error wrapping ErrRefused that
// carries the relay's reason.
func Fetch(ctx context.Context, h host.Host, relay peer.ID) (*Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, StreamTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, relay, Protocol)
	if err != nil {
		return nil, fmt.Errorf("ask relay %s for TURN credentials: %w", relay.ShortString(), err)
	}
	defer s.Close()
	dl, _ := ctx.Deadline()
	s.SetDeadline(dl)
	b, err := wire.ReadFrame(s, MaxFrame)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("TURN credentials from %s: %w", relay.ShortString(), err)
	}
	f, err := DecodeFrame(b)
	if err != nil {
		return nil, fmt.Errorf("TURN credentials from %s: %w", relay.ShortString(), err)
	}
	if f.Error != "" {
		return nil, fmt.Errorf("TURN credentials from %s: %w: %s", relay.ShortString(), ErrRefused, f.Error)
	}
	return &Credentials{URLs: f.URLs, Username: f.Username, Password: f.Credential,
		Expires: time.Now().Add(time.Duration(f.TTLSeconds) * time.Second)}, nil
}
