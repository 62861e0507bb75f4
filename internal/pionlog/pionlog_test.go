package pionlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLevels: pion's levels, one down, and the benign warnings at Debug.
func TestLevels(t *testing.T) {
	cases := []struct {
		name string
		log  func(l Logger)
		want string // the level logged, "" for none at Info
	}{
		{"info is debug", func(l Logger) { l.Info("peer connection state changed") }, ""},
		{"warn is info", func(l Logger) { l.Warn("stream closed") }, "INFO"},
		{"warnf is info", func(l Logger) { l.Warnf("stream %d closed", 3) }, "INFO"},
		{"ping before pairs is debug", func(l Logger) {
			l.Warnf("Failed to ping without candidate pairs. Connection is not possible yet.")
		}, ""},
		{"ping before pairs, unformatted", func(l Logger) {
			l.Warn("Failed to ping without candidate pairs. Connection is not possible yet.")
		}, ""},
		{"error is warn", func(l Logger) { l.Error("dtls failed") }, "WARN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
			tc.log(New(log, nil).NewLogger("ice").(Logger))
			got := buf.String()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, "level="+tc.want) {
				t.Fatalf("logged %q, want level %q", got, tc.want)
			}
		})
	}
}
