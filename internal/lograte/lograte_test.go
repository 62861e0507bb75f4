package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLimiter(t *testing.T) {
	cases := []struct {
		name  string
		burst int
		steps []struct {
			advance time.Duration
			lines   int
		}
		want []string // a part of each line written, in order
	}{
		{
			name: "under the burst", burst: 3,
			steps: []struct {
				advance time.Duration
				lines   int
			}{{0, 2}},
			want: []string{"msg=bad peer=0", "msg=bad peer=1"},
		},
		{
			name: "over the burst, summary in the next interval", burst: 2,
			steps: []struct {
				advance time.Duration
				lines   int
			}{{0, 1000}, {10 * time.Second, 1}},
			want: []string{"msg=bad peer=0", "msg=bad peer=1", `msg="suppressed similar log lines" msg=bad count=998 interval=10s`, "msg=bad peer=0"},
		},
		{
			name: "quiet interval, no summary", burst: 2,
			steps: []struct {
				advance time.Duration
				lines   int
			}{{0, 2}, {time.Minute, 1}},
			want: []string{"msg=bad peer=0", "msg=bad peer=1", "msg=bad peer=0"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := &clock{t: time.Unix(1000, 0)}
			l := New(slog.New(slog.NewTextHandler(&buf, nil)), Config{Burst: tc.burst, Interval: 10 * time.Second, Now: c.now})
			for _, s := range tc.steps {
				c.t = c.t.Add(s.advance)
				for i := 0; i < s.lines; i++ {
					l.Warn("bad", "peer", i)
				}
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tc.want), buf.String())
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want %q in it", i, lines[i], w)
				}
			}
		})
	}
}

func TestLimiterFlushAndKeys(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), Config{Burst: 1, Now: c.now})
	for i := 0; i < 5; i++ {
		l.Warn("one")
		l.Info("two")
	}
	l.Flush()
	out := buf.String()
	if strings.Count(out, "\n") != 4 {
		t.Fatalf("want 2 lines and 2 summaries:\n%s", out)
	}
	for _, w := range []string{"msg=one count=4", "msg=two count=4", "level=INFO msg=\"suppressed similar log lines\" msg=two"} {
		if !strings.Contains(out, w) {
			t.Errorf("no %q in:\n%s", w, out)
		}
	}
	// Distinct messages beyond maxKeys share one budget.
	buf.Reset()
	for i := 0; i < maxKeys+50; i++ {
		l.Warn(strings.Repeat("x", i+1))
	}
	if n := strings.Count(buf.String(), "\n"); n != maxKeys+1 {
		t.Fatalf("%d lines for %d messages, want %d", n, maxKeys+50, maxKeys+1)
	}
}
