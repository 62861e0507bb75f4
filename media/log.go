package media

import (
	"log/slog"

	"github.com/pion/logging"

	"github.com/parley-net/parley/internal/pionlog"
)

// pionLogs is pion webrtc's and ice's logger factory: internal/pionlog's
// levels (pion's shifted one down) and rate limit.
type pionLogs struct {
	log *slog.Logger
}

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionlog.New(f.log, nil).NewLogger(scope)
}
