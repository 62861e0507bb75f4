// Package browser puts a call's media in a web page: the page's own
// RTCPeerConnection (Chrome's libwebrtc, Firefox's) carries the audio
// straight to the other device, while the daemon keeps identity, the DHT,
// signalling and ringing. A Page is one WebSocket connection to such a page;
// a Session is one RTCPeerConnection in it, driven from Go with the same
// methods as media.Session, so a call's state machine runs a browser leg
// exactly as it runs a pion one. The package also embeds the web app's
// assets (Assets): no CDN, no build step. guest.go is the guest endpoint
// (/call/HANDLE: a page for people without parley, its limits), which any
// GuestCaller (the supernode's) plugs into.
//
// It must never decide anything about a call: it relays offers, answers,
// candidates, ICE restarts and statistics between the call engine and the
// page. It knows nothing of libp2p.
//
// # Wire protocol
//
// Every WebSocket message is one JSON object (Message), text frame, at most
// MaxMessage bytes; "t" says what it is. The daemon sends:
//
//	pc       {id, ice, relay_only}   create a peer connection with the microphone
//	offer    {id, req, restart}      create an offer (an ICE restart if set); reply sdp
//	answer   {id, req, sdp}          take this offer and answer it; reply sdp
//	remote   {id, sdp}               take this answer to our offer
//	cand     {id, cand}              a remote candidate (RTCIceCandidateInit JSON)
//	ice      {id, ice}               ICE servers for the next restart
//	close    {id}                    close the peer connection
//	event    {event}                 a node event for the app (chat, calls)
//
// The page sends:
//
//	sdp      {req, sdp | error}      the reply to offer or answer
//	cand     {id, cand}              a local candidate ("" when gathering ends)
//	state    {id, state}             RTCPeerConnectionState
//	stats    {id, stats}             getStats, digested, every 250 ms while connected
//	error    {id, error}             an asynchronous operation failed
//	closed   {id}                    the page closed the peer connection
//
// Limits: MaxMessage per message, MaxSessions peer connections per page,
// maxPendingRequests requests awaiting a reply, maxQueued messages queued
// for the page (a page that far behind is disconnected).
package browser

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/pion/webrtc/v4"
)

// Limits of the protocol.
const (
	// MaxMessage bounds one WebSocket message: an SDP of 64 KiB, every
	// byte escaped, fits.
	MaxMessage = 400 << 10
	// MaxSessions bounds the peer connections one page holds (ring-all
	// makes one per callee device).
	MaxSessions        = 16
	maxPendingRequests = 64
	maxQueued          = 1024
	maxSDP             = 64 << 10
	maxCandidate       = 4 << 10
	maxICEServers      = 16
	maxIDLen           = 64
)

// ErrBadMessage is a message from a page that does not parse or breaks a limit.
var ErrBadMessage = errors.New("browser: bad message")

// Message is every message of the protocol, both ways; unused fields are
// left out.
type Message struct {
	T         string             `json:"t"`
	ID        string             `json:"id,omitempty"`
	Req       uint64             `json:"req,omitempty"`
	SDP       string             `json:"sdp,omitempty"`
	Restart   bool               `json:"restart,omitempty"`
	Cand      *string            `json:"cand,omitempty"`
	ICE       []webrtc.ICEServer `json:"ice,omitempty"`
	RelayOnly bool               `json:"relay_only,omitempty"`
	State     string             `json:"state,omitempty"`
	Stats     *PageStats         `json:"stats,omitempty"`
	Error     string             `json:"error,omitempty"`
	Event     any                `json:"event,omitempty"`
}

// PageStats is what the page digests from RTCPeerConnection.getStats().
type PageStats struct {
	PacketsIn  uint64  `json:"packets_in"`
	PacketsOut uint64  `json:"packets_out"`
	BytesIn    uint64  `json:"bytes_in"`
	BytesOut   uint64  `json:"bytes_out"`
	Lost       int64   `json:"lost"`
	JitterS    float64 `json:"jitter_s"`
	RTTS       float64 `json:"rtt_s"`
	// ConcealedS and ReceivedS are seconds of audio concealed and played
	// (inbound-rtp concealedSamples and totalSamplesReceived over 48 kHz).
	ConcealedS float64 `json:"concealed_s"`
	ReceivedS  float64 `json:"received_s"`
	// JitterBufferS is the mean jitter buffer delay.
	JitterBufferS float64 `json:"jitter_buffer_s"`
	LocalType     string  `json:"local_type"`
	RemoteType    string  `json:"remote_type"`
	Local         string  `json:"local"`
	Remote        string  `json:"remote"`
	Protocol      string  `json:"protocol"`
	RelayURL      string  `json:"relay_url"`
	RelayProtocol string  `json:"relay_protocol"`
	// Level is the received audio's level, 0 to 1 (audioLevel).
	Level float64 `json:"level"`
}

// page-to-daemon message types.
var fromPage = map[string]bool{"sdp": true, "cand": true, "state": true, "stats": true, "error": true, "closed": true}

var pageStates = map[string]bool{"new": true, "connecting": true, "connected": true, "disconnected": true, "failed": true, "closed": true}

// DecodeMessage parses one message from a page and checks its limits.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrBadMessage, len(b), MaxMessage)
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	bad := func(format string, args ...any) (*Message, error) {
		return nil, fmt.Errorf("%w: %s: %s", ErrBadMessage, m.T, fmt.Sprintf(format, args...))
	}
	switch {
	case !fromPage[m.T]:
		return nil, fmt.Errorf("%w: type %q", ErrBadMessage, m.T)
	case len(m.ID) > maxIDLen:
		return bad("id of %d bytes", len(m.ID))
	case len(m.SDP) > maxSDP:
		return bad("SDP of %d bytes", len(m.SDP))
	case m.Cand != nil && len(*m.Cand) > maxCandidate:
		return bad("candidate of %d bytes", len(*m.Cand))
	case len(m.Error) > 1024:
		m.Error = m.Error[:1024]
	}
	if !utf8.ValidString(m.SDP) {
		return bad("SDP not UTF-8")
	}
	switch m.T {
	case "sdp":
		if m.Req == 0 {
			return bad("no req")
		}
	case "cand":
		if m.Cand == nil {
			return bad("no cand")
		}
	case "state":
		if !pageStates[m.State] {
			return bad("state %q", m.State)
		}
	case "stats":
		if m.Stats == nil {
			return bad("no stats")
		}
	}
	if m.T != "sdp" && m.ID == "" {
		return bad("no id")
	}
	m.ICE, m.Event = nil, nil // only the daemon sends these
	return &m, nil
}
