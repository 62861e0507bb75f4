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
// trickle ICE candidates (candidate, empty at the end of gathering); the caller
// sends restart (a new offer for an ICE restart, numbered in "restart"),
// answered by restart-answer with the same number; either ends the call with
// hangup ("lost" when the peer was not heard for 10 s). The caller tells the
// devices that lost the race cancel with reason "answered elsewhere", or
// "timeout", "cancelled".
//
// Signalling is not tied to one stream. Every frame but ping, pong, resume and
// resumed carries a sequence number ("seq", from 1, per sender and call), and
// every frame the highest sequence number its sender has received ("ack").
// When an answered call's stream breaks, the caller opens a new one over
// whatever reaches the callee (a direct connection, another supernode's
// circuit, the cloud relay's circuit) and sends resume with its ack; the
// callee, which must see the same device on the new stream, replies resumed
// with its own; each side then sends again what the other has not
// acknowledged, and a receiver ignores a sequence number it has seen, so
// nothing is applied twice. While the peer's media is not heard (for 1 s), each
// side pings every 250 ms and the other answers pong: a stream that answers
// nothing for 1 s is taken for dead (a killed relay under a QUIC connection
// says nothing) and re-opened. While media flows a ping goes out once a minute, to
// keep NAT and relay state alive.
//
// Frames are wire frames of at most MaxCallFrame bytes; every frame names
// its call ID, and a frame for another call resets the stream. The DTLS
// fingerprint travels only inside the SDP on this Noise-authenticated stream,
// so no relay on the media path can swap it.
//
// Version 2.0.0 added seq, ack, restart, resume, resumed and pong; 1.0.0
// peers are not spoken to.
const CallProtocol = "/parley/call/2.0.0"

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
	sigPong          = "pong"
	sigResume        = "resume"  // first frame of a new stream for an answered call
	sigResumed       = "resumed" // the callee took the new stream
)

type callFrame struct {
	Type      string `json:"t"`
	Call      string `json:"call"`
	From      string `json:"from,omitempty"`    // invite: caller's handle
	Record    []byte `json:"record,omitempty"`  // invite: caller's signed handle record
	Guest     bool   `json:"guest,omitempty"`   // invite: a guest's call via the stream's peer (guestcall.go)
	SDP       string `json:"sdp,omitempty"`     // invite, accept, restart, restart-answer
	Candidate string `json:"cand,omitempty"`    // candidate (JSON of an ICE candidate)
	Reason    string `json:"reason,omitempty"`  // reject, cancel, hangup
	Seq       uint64 `json:"seq,omitempty"`     // sequenced frames: this frame's number
	Ack       uint64 `json:"ack,omitempty"`     // the highest seq received from the peer
	Restart   uint32 `json:"restart,omitempty"` // restart, restart-answer: which restart
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
		if f.Guest != (len(f.Record) == 0 && f.From == "") || !f.Guest && (len(f.Record) == 0 || f.From == "") {
			return nil, fmt.Errorf("%w: invite without caller, or a guest's with one", ErrBadFrame)
		}
		needSDP = true
	case sigAccept, sigRestart, sigRestartAnswer:
		needSDP = true
	case sigCandidate:
		// An empty candidate marks the end of candidates (RFC 8838 §8.2).
	case sigRinging, sigReject, sigCancel, sigHangup, sigPing, sigPong, sigResume, sigResumed:
	default:
		return nil, fmt.Errorf("%w: unknown call frame %q", ErrBadFrame, f.Type)
	}
	if needSDP != (f.SDP != "") {
		return nil, fmt.Errorf("%w: %s frame with%s SDP", ErrBadFrame, f.Type, map[bool]string{true: "out", false: ""}[needSDP])
	}
	if f.Type != sigInvite && (f.Record != nil || f.From != "" || f.Guest) {
		return nil, fmt.Errorf("%w: caller fields on %s", ErrBadFrame, f.Type)
	}
	switch f.Type {
	case sigPing, sigPong, sigResume, sigResumed:
		if f.Seq != 0 {
			return nil, fmt.Errorf("%w: %s frame with a sequence number", ErrBadFrame, f.Type)
		}
	default:
		if f.Seq == 0 {
			return nil, fmt.Errorf("%w: %s frame without a sequence number", ErrBadFrame, f.Type)
		}
	}
	if (f.Type == sigRestart || f.Type == sigRestartAnswer) != (f.Restart != 0) {
		return nil, fmt.Errorf("%w: restart number on %s", ErrBadFrame, f.Type)
	}
	if f.Type != sigCandidate && f.Candidate != "" {
		return nil, fmt.Errorf("%w: candidate on %s", ErrBadFrame, f.Type)
	}
	return &f, nil
}
