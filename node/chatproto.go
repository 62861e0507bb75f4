package node

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

// ChatProtocol carries envelopes (see Envelope) between devices.
//
// The dialing device sends env frames, each carrying one encoded envelope;
// the listener answers each with an ack frame naming the envelope's ID once
// the payload is committed to its store, or with err set when it refuses the
// envelope (it will never accept it: the sender should not retry), or with
// err and held set when it cannot verify the sender now (see ErrHeld): the
// envelope is neither committed nor refused for good, and the sender keeps
// it and tries again later. Frames are
// wire frames of at most MaxChatFrame bytes. A stream idle for
// chatIdleTimeout, a frame not whole within Config.ChatFrameTimeout (5 s) of
// its first byte, or a malformed frame is reset. A device serves at most 64
// chat streams at once, 4 per peer and Config.ChatStreamsPerIP (16) per IP
// address. The envelope's
// sender is checked against its signature and the sender's account-signed
// record, never taken from the frame alone.
const ChatProtocol = "/parley/chat/1.0.0"

// Limits of the chat protocol.
const (
	MaxChatFrame = MaxEnvelope*4/3 + 256 // an envelope, base64-encoded, plus the frame's fields
	MaxBodyBytes = 16 << 10              // bytes of one message body
	maxConvLen   = 160
)

// ErrBadFrame is returned for a chat or call frame that breaks its protocol.
var ErrBadFrame = errors.New("malformed frame")

type chatFrame struct {
	Type string `json:"t"`              // "env" or "ack"
	Env  []byte `json:"env,omitempty"`  // env: an encoded Envelope
	ID   string `json:"id,omitempty"`   // ack: the envelope acknowledged
	Err  string `json:"err,omitempty"`  // ack: why the envelope was refused
	Held bool   `json:"held,omitempty"` // ack with err: not committed, try again later
}

// decodeChatFrame parses and checks one frame payload.
func decodeChatFrame(b []byte) (*chatFrame, error) {
	var f chatFrame
	if err := wire.DecodeJSON(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	switch f.Type {
	case "env":
		if len(f.Env) == 0 || len(f.Env) > MaxEnvelope || f.ID != "" || f.Err != "" || f.Held {
			return nil, fmt.Errorf("%w: bad env", ErrBadFrame)
		}
	case "ack":
		if !validID(f.ID) || f.Env != nil || len(f.Err) > 200 || (f.Held && f.Err == "") {
			return nil, fmt.Errorf("%w: bad ack", ErrBadFrame)
		}
	default:
		return nil, fmt.Errorf("%w: unknown type %q", ErrBadFrame, f.Type)
	}
	return &f, nil
}

// wireMsg is a chat message's fields as they travel.
type wireMsg struct {
	ID      string
	Conv    string
	From    string
	Lamport uint64
	SentMS  int64
	Body    string
}

func (m *wireMsg) checkFields() error {
	switch {
	case !validID(m.ID):
		return fmt.Errorf("%w: bad message id", ErrBadFrame)
	case discovery.ValidHandle(m.From) != nil:
		return fmt.Errorf("%w: bad sender handle", ErrBadFrame)
	case len(m.Body) == 0 || len(m.Body) > MaxBodyBytes || !utf8.ValidString(m.Body):
		return fmt.Errorf("%w: body must be 1 to %d bytes of UTF-8", ErrBadFrame, MaxBodyBytes)
	case m.Lamport == 0 || m.SentMS <= 0:
		return fmt.Errorf("%w: bad clock", ErrBadFrame)
	case len(m.Conv) == 0 || len(m.Conv) > maxConvLen:
		return fmt.Errorf("%w: bad conversation", ErrBadFrame)
	}
	return nil
}

func validID(s string) bool { return wire.ValidID(s) }

// DMConv names the one-to-one conversation between two handles; both sides
// compute the same name.
func DMConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

// GroupConv names a group's conversation.
func GroupConv(id string) string { return "grp:" + id }

func groupConvID(conv string) (string, bool) {
	return strings.CutPrefix(conv, "grp:")
}

// convMembers returns the handles of a direct conversation.
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

// convPeer returns the member of a direct conversation that is not me (or
// me, for a conversation with myself), or "#name" for a group.
func convPeer(conv, me string) string {
	m, err := convMembers(conv)
	if err != nil {
		return conv
	}
	if m[0] == me {
		return m[1]
	}
	return m[0]
}
