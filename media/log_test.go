package media

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestPionLogLevels(t *testing.T) {
	cases := []struct {
		name string
		log  func(l pionLogger)
		want string // the level logged, "" for none at Info
	}{
		{"info is debug", func(l pionLogger) { l.Info("peer connection state changed") }, ""},
		{"warn is info", func(l pionLogger) { l.Warn("stream closed") }, "INFO"},
		{"warnf is info", func(l pionLogger) { l.Warnf("stream %d closed", 3) }, "INFO"},
		{"ping before pairs is debug", func(l pionLogger) {
			l.Warnf("Failed to ping without candidate pairs. Connection is not possible yet.")
		}, ""},
		{"ping before pairs, unformatted", func(l pionLogger) {
			l.Warn("Failed to ping without candidate pairs. Connection is not possible yet.")
		}, ""},
		{"error is error", func(l pionLogger) { l.Error("dtls failed") }, "ERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
			tc.log(pionLogs{log: log}.NewLogger("ice").(pionLogger))
			got := buf.String()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, "level="+tc.want) {
				t.Fatalf("logged %q, want level %q", got, tc.want)
			}
		})
	}
}
