package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/parley-net/parley/discovery"
)

// TestAPIErrorsMatchAcrossTheSocket: an error the daemon answers with keeps
// its identity on the client: errors.Is matches the sentinel behind it
// after a real HTTP round trip on the control socket, and its text is the
// daemon's. An error with no code matches none.
func TestAPIErrorsMatchAcrossTheSocket(t *testing.T) {
	home := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(home, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	var answer atomic.Pointer[error]
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeErr(w, *answer.Load()) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cl, err := Dial(home)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range apiCodes {
		t.Run(c.code, func(t *testing.T) {
			want := fmt.Errorf("doing something with x: %w", c.err)
			answer.Store(&want)
			_, err := cl.CallInfo(context.Background(), "x")
			var ae *APIError
			if !errors.Is(err, c.err) || !errors.As(err, &ae) || ae.Code != c.code || ae.Status != c.status {
				t.Fatalf("client got %#v; want errors.Is %v, code %s, status %d", err, c.err, c.code, c.status)
			}
			if err.Error() != userText(want) {
				t.Fatalf("text %q, want %q", err.Error(), userText(want))
			}
		})
	}
	other := errors.New("something else")
	answer.Store(&other)
	_, err = cl.CallInfo(context.Background(), "x")
	if err == nil || err.Error() != "something else" || errors.Is(err, discovery.ErrNoSuchHandle) || errors.Unwrap(err) != nil {
		t.Fatalf("an error without a code came back as %#v", err)
	}
}
