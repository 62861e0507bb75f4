package turnrelay

import (
	"log/slog"
	"time"

	"github.com/parley-net/parley/internal/pionlog"
)

// newPionLogs is pion/turn's logger factory: internal/pionlog's levels
// (pion's shifted one down) and rate limit, on the server's clock.
func newPionLogs(log *slog.Logger, now func() time.Time) pionlog.Factory {
	return pionlog.New(log, now)
}
