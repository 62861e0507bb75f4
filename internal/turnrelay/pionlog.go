package turnrelay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pion/logging"

	"github.com/parley-net/parley/internal/lograte"
)

// pionLogs adapts slog to pion's logging. pion logs per packet at Info
// ("no permission") and Error ("failed to send") when a client misbehaves,
// so its levels are shifted one down: a remote party must not be able to
// fill the operator's log at the default level. Trace and Debug become
// slog Debug, Info becomes Debug, Warn becomes Info and Error becomes Warn.
//
// What is still logged at Info or above (pion's warnings and errors) goes
// through a lograte.Limiter keyed by scope and format string: a few lines
// and a count per interval, never a line per bad packet.
type pionLogs struct {
	log   *slog.Logger
	limit *lograte.Limiter
}

func newPionLogs(log *slog.Logger, now func() time.Time) pionLogs {
	return pionLogs{log: log, limit: lograte.New(log, lograte.Config{Now: now})}
}

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope), scope: scope, limit: f.limit}
}

type pionLogger struct {
	log   *slog.Logger
	scope string
	limit *lograte.Limiter // nil: no rate limit
}

func (l pionLogger) print(level slog.Level, msg string) {
	l.printf(level, "%s", msg)
}

// printf checks the level before formatting: pion logs on the hot path,
// and formatting costs more than relaying.
func (l pionLogger) printf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if level >= slog.LevelInfo && l.limit != nil {
		key := l.scope + ": " + format
		if format == "%s" {
			key = l.scope + ": " + msg
		}
		l.limit.LogKeyed(level, key, msg, "pion", l.scope)
		return
	}
	l.log.Log(ctx, level, msg)
}

const levelTrace = slog.LevelDebug - 4

func (l pionLogger) Trace(msg string)                  { l.print(levelTrace, msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.printf(levelTrace, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.print(slog.LevelDebug, msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.printf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.print(slog.LevelDebug, msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.printf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.print(slog.LevelInfo, msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.printf(slog.LevelInfo, format, args...) }
func (l pionLogger) Error(msg string)                  { l.print(slog.LevelWarn, msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.printf(slog.LevelWarn, format, args...) }
