package nodetest

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

// Loopback is where test hosts listen: an ephemeral TCP port on
// 127.0.0.1.
var Loopback = []string{"/ip4/127.0.0.1/tcp/0"}

// Logger is the logger of a part a test starts: silent, or with
// PARLEY_TEST_DEBUG=1 every record at debug level on stderr.
func Logger() *slog.Logger {
	if os.Getenv("PARLEY_TEST_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start is the one way tests start a part (a supernode, a node, a relay):
// start builds it, a failure fails t naming what, and the part is closed
// when t ends. The constructor is a parameter because this package imports
// no parley package: the roles' own internal tests use it too.
func Start[T interface{ Close() error }](t testing.TB, what string, start func() (T, error)) T {
	t.Helper()
	p, err := start()
	if err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}
