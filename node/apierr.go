package node

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"

	kb "github.com/libp2p/go-libp2p-kbucket"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node/netcheck"
)

// apiError is the body of every error answer of the control API: the text a
// person reads and, when the error is one of the sentinels in apiCodes, its
// code, so the client can give back an error that errors.Is matches.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// apiCodes are the sentinel errors the control API carries by name, with
// the HTTP status each answers with; the first match wins. A code is part
// of the API: never rename one.
var apiCodes = []struct {
	code   string
	err    error
	status int
}{
	{"no_such_handle", discovery.ErrNoSuchHandle, http.StatusNotFound},
	{"bad_handle", discovery.ErrBadHandle, http.StatusBadRequest},
	{"bad_message", ErrBadMessage, http.StatusBadRequest},
	{"bad_audio", ErrBadAudio, http.StatusBadRequest},
	{"no_such_call", ErrNoSuchCall, http.StatusNotFound},
	{"no_such_group", ErrNoSuchGroup, http.StatusNotFound},
	{"call_state", ErrCallState, http.StatusConflict},
	{"busy", ErrBusy, http.StatusConflict},
	{"no_device", ErrNoDevice, http.StatusServiceUnavailable},
	{"no_relay", ErrNoRelay, http.StatusServiceUnavailable},
	{"offline", ErrOffline, http.StatusServiceUnavailable},
	{"no_netcheck_targets", netcheck.ErrNoTargets, http.StatusServiceUnavailable},
	{"contact_key_changed", ErrContactKeyChanged, http.StatusConflict},
	{"record_expired", discovery.ErrExpired, http.StatusConflict},
	{"held", ErrHeld, http.StatusConflict},
	{"unverified", ErrUnverified, http.StatusConflict},
	{"timeout", context.DeadlineExceeded, http.StatusGatewayTimeout},
	{"no_dht_peer", kb.ErrLookupFailure, http.StatusServiceUnavailable},
}

// writeErr answers with err: its status and code from apiCodes (500 and no
// code for any other error), and its text as a person reads it.
func writeErr(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, ""
	for _, c := range apiCodes {
		if errors.Is(err, c.err) {
			status, code = c.status, c.code
			break
		}
	}
	writeJSON(w, status, apiError{Error: userText(err), Code: code})
}

// APIError is an error the daemon answered a control API request with. It
// wraps the sentinel error its code names (errors.Is(err, ErrNoSuchCall)
// holds on the client as on the daemon), and reads as the daemon's text.
type APIError struct {
	// Code is the machine-readable name of the error ("" when the daemon
	// gave none); Status the HTTP status.
	Code   string
	Status int
	msg    string
	err    error // the sentinel Code names; nil for none or an unknown one
}

func (e *APIError) Error() string { return e.msg }

// Unwrap is the sentinel error the code names, or nil.
func (e *APIError) Unwrap() error { return e.err }

// apiErrorOf rebuilds the error a daemon answered with.
func apiErrorOf(status int, body apiError) *APIError {
	e := &APIError{Code: body.Code, Status: status, msg: body.Error}
	for _, c := range apiCodes {
		if c.code == body.Code {
			e.err = c.err
			break
		}
	}
	return e
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
