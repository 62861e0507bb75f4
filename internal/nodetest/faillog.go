package nodetest

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// failLogBytes bounds what a test keeps of its parts' logs: the newest
// records, enough for the seconds before a failure.
const failLogBytes = 512 << 10

// failLog is one test's record of its parts' logs, in the order written.
type failLog struct {
	mu  sync.Mutex
	buf []byte // the newest failLogBytes at most
	cut bool   // older records were dropped
}

func (l *failLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - failLogBytes; over > 0 {
		// Drop whole lines from the front.
		if i := bytes.IndexByte(l.buf[over:], '\n'); i >= 0 {
			over += i + 1
		}
		l.buf = append(l.buf[:0], l.buf[over:]...)
		l.cut = true
	}
	return len(p), nil
}

var failLogs sync.Map // testing.TB → *failLog

// FailLogger is the logger of a part a test starts, named name: its
// records at info level and above are kept (the newest 512 KiB, shared
// by every part of t, in order) and printed only if t fails, so a failure
// in CI says what the parts did before it. With PARLEY_TEST_DEBUG=1 every
// record at debug level goes to stderr as it happens instead.
func FailLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("PARLEY_TEST_DEBUG") != "" {
		return Logger().With("part", name)
	}
	l := &failLog{}
	if old, loaded := failLogs.LoadOrStore(t, l); loaded {
		l = old.(*failLog)
	} else {
		t.Cleanup(func() {
			failLogs.Delete(t)
			if !t.Failed() {
				return
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.cut {
				t.Logf("the parts' logs (the newest %d KiB):\n%s", failLogBytes>>10, l.buf)
			} else {
				t.Logf("the parts' logs:\n%s", l.buf)
			}
		})
	}
	return slog.New(slog.NewTextHandler(l, nil)).With("part", name)
}
