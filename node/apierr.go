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

type apiError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, discovery.ErrNoSuchHandle):
		code = http.StatusNotFound
	case errors.Is(err, discovery.ErrBadHandle), errors.Is(err, ErrBadMessage), errors.Is(err, ErrBadAudio):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNoSuchCall), errors.Is(err, ErrNoSuchGroup):
		code = http.StatusNotFound
	case errors.Is(err, ErrCallState), errors.Is(err, ErrBusy):
		code = http.StatusConflict
	case errors.Is(err, ErrNoDevice), errors.Is(err, ErrNoRelay), errors.Is(err, ErrOffline), errors.Is(err, netcheck.ErrNoTargets):
		code = http.StatusServiceUnavailable
	case errors.Is(err, ErrContactKeyChanged), errors.Is(err, discovery.ErrExpired), errors.Is(err, ErrHeld), errors.Is(err, ErrUnverified):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, kb.ErrLookupFailure):
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, apiError{Error: userText(err)})
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
