package node

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

// ChatProtocol carries chat messages between devices.
//
// The dialing device sends a hello frame carrying its account's signed handle
// record, then any number of msg frames; the listener answers each msg with an
// ack frame once the message is committed to its store (ok) or refused (err).
// Frames are wire frames of at most MaxChatFrame bytes. A stream idle for
// chatIdleTimeout, a malformed frame, or a hello whose record does not list
// the dialing peer resets the stream. The peer's identity comes from the
// Noise-authenticated connection, never from the frame.
const ChatProtocol = "/parley/chat/1.0.0"

// Limits of the chat protocol.
const (
	MaxChatFrame = 64 << 10 // bytes of one frame
	MaxBodyBytes = 16 << 10 // bytes of one message body
	maxIDLen     = 64
	maxConvLen   = 160
)

// ErrBadFrame is returned for a chat or call frame that breaks its protocol.
var ErrBadFrame = errors.New("malformed frame")

type chatFrame struct {
	Type   string   `json:"t"`                // "hello", "msg" or "ack"
	Record []byte   `json:"record,omitempty"` // hello
	Msg    *wireMsg `json:"msg,omitempty"`    // msg
	ID     string   `json:"id,omitempty"`     // ack
	Err    string   `json:"err,omitempty"`    // ack: why the message was refused
}

type wireMsg struct {
	ID      string `json:"id"`
	Conv    string `json:"conv"`
	From    string `json:"from"`
	Lamport uint64 `json:"lamport"`
	SentMS  int64  `json:"sent_ms"`
	Body    string `json:"body"`
}

// decodeChatFrame parses and checks one frame payload.
func decodeChatFrame(b []byte) (*chatFrame, error) {
	var f chatFrame
	if err := wire.DecodeJSON(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	switch f.Type {
	case "hello":
		if len(f.Record) == 0 || f.Msg != nil || f.ID != "" {
			return nil, fmt.Errorf("%w: bad hello", ErrBadFrame)
		}
	case "msg":
		if f.Msg == nil || f.Record != nil || f.ID != "" {
			return nil, fmt.Errorf("%w: bad msg", ErrBadFrame)
		}
		if err := f.Msg.check(); err != nil {
			return nil, err
		}
	case "ack":
		if !validID(f.ID) || f.Msg != nil || f.Record != nil || len(f.Err) > 200 {
			return nil, fmt.Errorf("%w: bad ack", ErrBadFrame)
		}
	default:
		return nil, fmt.Errorf("%w: unknown type %q", ErrBadFrame, f.Type)
	}
	return &f, nil
}

func (m *wireMsg) check() error {
	switch {
	case !validID(m.ID):
		return fmt.Errorf("%w: bad message id", ErrBadFrame)
	case discovery.ValidHandle(m.From) != nil:
		return fmt.Errorf("%w: bad sender handle", ErrBadFrame)
	case len(m.Body) == 0 || len(m.Body) > MaxBodyBytes || !utf8.ValidString(m.Body):
		return fmt.Errorf("%w: body must be 1 to %d bytes of UTF-8", ErrBadFrame, MaxBodyBytes)
	case m.Lamport == 0 || m.SentMS <= 0:
		return fmt.Errorf("%w: bad clock", ErrBadFrame)
	}
	if _, err := convMembers(m.Conv); err != nil {
		return err
	}
	return nil
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// DMConv names the one-to-one conversation between two handles; both sides
// compute the same name.
func DMConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

// convMembers returns the handles of a conversation name.
func convMembers(conv string) ([]string, error) {
	if len(conv) > maxConvLen {
		return nil, fmt.Errorf("%w: conversation name too long", ErrBadFrame)
	}
	rest, ok := strings.CutPrefix(conv, "dm:")
	if !ok {
		return nil, fmt.Errorf("%w: unknown conversation kind %q", ErrBadFrame, conv)
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 2 || parts[0] > parts[1] {
		return nil, fmt.Errorf("%w: bad conversation %q", ErrBadFrame, conv)
	}
	for _, p := range parts {
		if discovery.ValidHandle(p) != nil {
			return nil, fmt.Errorf("%w: bad conversation %q", ErrBadFrame, conv)
		}
	}
	return parts, nil
}

// convPeer returns the member of a conversation that is not me (or me, for a
// conversation with myself).
func convPeer(conv, me string) string {
	m, err := convMembers(conv)
	if err != nil {
		return ""
	}
	if m[0] == me {
		return m[1]
	}
	return m[0]
}
