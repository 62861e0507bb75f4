package node

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestUserText(t *testing.T) {
	id, err := peer.Decode("12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("no such handle: bob"), "no such handle: bob"},
		{"peer ID", fmt.Errorf("%s refused m1: bad envelope", id.ShortString()), "…CVe2Xo refused m1: bad envelope"},
		{"two peer IDs", fmt.Errorf("%s and %s", id.ShortString(), id.ShortString()), "…CVe2Xo and …CVe2Xo"},
		{"empty routing table", fmt.Errorf("resolve handle bob: %w", kb.ErrLookupFailure),
			"resolve handle bob: no DHT peer to ask: this daemon is connected to no supernode (check its --bootstrap addresses and the network)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := userText(tc.err); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestReadJSONLimit(t *testing.T) {
	msg := func(n int) string { return `{"to":"bob","text":"` + strings.Repeat("x", n) + `"}` }
	cases := []struct {
		name     string
		body     string
		limit    int
		wantCode int
		wantErr  string
	}{
		{"fits", msg(10), maxSendRequest, http.StatusOK, ""},
		{"a send over the limit names the message limit", msg(200 << 10), maxSendRequest, http.StatusBadRequest, "a message is at most 16384 bytes (16 KiB)"},
		{"another request over the limit", msg(100 << 10), maxRequestBody, http.StatusRequestEntityTooLarge, "request body too large: over 64 KiB"},
		{"not JSON", "{", maxRequestBody, http.StatusBadRequest, "bad request: unexpected EOF"},
		{"unknown field", `{"to":"bob","txet":"hi"}`, maxRequestBody, http.StatusBadRequest, "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/v1/chat/send", strings.NewReader(tc.body))
			var req struct {
				To   string `json:"to"`
				Text string `json:"text"`
			}
			ok := readJSONLimit(w, r, &req, tc.limit)
			if ok != (tc.wantCode == http.StatusOK) {
				t.Fatalf("ok %v; answer %d %s", ok, w.Code, w.Body)
			}
			if !ok && (w.Code != tc.wantCode || !strings.Contains(w.Body.String(), tc.wantErr)) {
				t.Fatalf("answer %d %s, want %d with %q", w.Code, w.Body, tc.wantCode, tc.wantErr)
			}
		})
	}
}
