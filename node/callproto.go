package node

import (
	"fmt"
	"unicode/utf8"

	"github.com/parley-net/parley/internal/wire"
)

// CallProtocol carries call signalling between two devices.
//
// The caller opens one stream to every device of the callee and sends
// invite (with its SDP offer and its signed handle record). The callee
// answers ringing, then accept (SDP answer), reject (reason "declined",
// "busy", "glare") or nothing until the caller's ring timeout. Both sides
// trickle ICE candidates (candidate, empty at the end of gathering); either may send
// restart (a new offer for an ICE restart), answered by restart-answer; either
// ends the call with hangup. The caller tells the devices that lost the race
// cancel with reason "answered elsewhere", or "timeout", "cancelled". During
// the call both sides send ping now and then, so a stream with nothing else
// to say is not taken for a dead one (and a NAT or relay keeps it open).
//
// Frames are wire frames of at most MaxCallFrame bytes; every frame names
// its call ID, and a frame for another call resets the stream. The DTLS
// fingerprint travels only inside the SDP on this Noise-authenticated stream,
// so no relay on the media path can swap it.
const CallProtocol = "/parley/call/1.0.0"

// Limits of the call protocol.
const (
	MaxCallFrame   = 32 << 10 // bytes of one frame (an SDP offer is 1-4 KiB)
	maxSDPBytes    = 24 << 10
	maxCandidate   = 1 << 10
	maxReasonBytes = 120
)

// Call signalling frame types.
const (
	sigInvite        = "invite"
	sigRinging       = "ringing"
	sigAccept        = "accept"
	sigReject        = "reject"
	sigCancel        = "cancel"
	sigCandidate     = "candidate"
	sigRestart       = "restart"
	sigRestartAnswer = "restart-answer"
	sigHangup        = "hangup"
	sigPing          = "ping"
)

type callFrame struct {
	Type      string `json:"t"`
	Call      string `json:"call"`
	From      string `json:"from,omitempty"`   // invite: caller's handle
	Record    []byte `json:"record,omitempty"` // invite: caller's signed handle record
	SDP       string `json:"sdp,omitempty"`    // invite, accept, restart, restart-answer
	Candidate string `json:"cand,omitempty"`   // candidate (JSON of an ICE candidate)
	Reason    string `json:"reason,omitempty"` // reject, cancel, hangup
}

// decodeCallFrame parses and checks one frame payload.
func decodeCallFrame(b []byte) (*callFrame, error) {
	var f callFrame
	if err := wire.DecodeJSON(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if !validID(f.Call) {
		return nil, fmt.Errorf("%w: bad call id", ErrBadFrame)
	}
	if len(f.SDP) > maxSDPBytes || len(f.Candidate) > maxCandidate || len(f.Reason) > maxReasonBytes ||
		!utf8.ValidString(f.SDP) || !utf8.ValidString(f.Candidate) || !utf8.ValidString(f.Reason) {
		return nil, fmt.Errorf("%w: field too long or not UTF-8", ErrBadFrame)
	}
	needSDP := false
	switch f.Type {
	case sigInvite:
		if len(f.Record) == 0 || f.From == "" {
			return nil, fmt.Errorf("%w: invite without caller", ErrBadFrame)
		}
		needSDP = true
	case sigAccept, sigRestart, sigRestartAnswer:
		needSDP = true
	case sigCandidate:
		// An empty candidate marks the end of candidates (RFC 8838 §8.2).
	case sigRinging, sigReject, sigCancel, sigHangup, sigPing:
	default:
		return nil, fmt.Errorf("%w: unknown call frame %q", ErrBadFrame, f.Type)
	}
	if needSDP != (f.SDP != "") {
		return nil, fmt.Errorf("%w: %s frame with%s SDP", ErrBadFrame, f.Type, map[bool]string{true: "out", false: ""}[needSDP])
	}
	if f.Type != sigInvite && (f.Record != nil || f.From != "") {
		return nil, fmt.Errorf("%w: caller fields on %s", ErrBadFrame, f.Type)
	}
	if f.Type != sigCandidate && f.Candidate != "" {
		return nil, fmt.Errorf("%w: candidate on %s", ErrBadFrame, f.Type)
	}
	return &f, nil
}
