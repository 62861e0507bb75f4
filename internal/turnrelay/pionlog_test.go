package turnrelay

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/lograte"
)

// TestPionLogsRateLimited: pion's per-packet complaints about a
// misbehaving client cost a few lines and a count, not a line each.
func TestPionLogsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	f := newPionLogs(slog.New(slog.NewTextHandler(&buf, nil)), clock)
	l := f.NewLogger("turn")
	for i := 0; i < 1000; i++ {
		l.Errorf("failed to send ChannelData from allocation %v: %v", i, "bad")
		l.Infof("no permission for %d", i) // debug: not written at all
	}
	now = now.Add(lograte.DefaultInterval)
	l.Errorf("failed to send ChannelData from allocation %v: %v", 1000, "bad")
	out := buf.String()
	lines := strings.Count(out, "\n")
	if lines != lograte.DefaultBurst+2 {
		t.Fatalf("%d lines for 1001 errors, want %d:\n%s", lines, lograte.DefaultBurst+2, out)
	}
	if !strings.Contains(out, "count=995") || !strings.Contains(out, "pion=turn") {
		t.Fatalf("no summary with the count and scope:\n%s", out)
	}
}
