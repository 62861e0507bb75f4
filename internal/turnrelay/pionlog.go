package turnrelay

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs adapts slog to pion's logging. pion logs per packet at Info
// ("no permission") and Error ("failed to send") when a client misbehaves,
// so its levels are shifted one down: a remote party must not be able to
// fill the operator's log at the default level. Trace and Debug become
// slog Debug, Info becomes Debug, Warn becomes Info and Error becomes Warn.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) print(level slog.Level, msg string) {
	if ctx := context.Background(); l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, msg)
	}
}

// printf checks the level before formatting: pion logs on the hot path,
// and formatting costs more than relaying.
func (l pionLogger) printf(level slog.Level, format string, args ...any) {
	if ctx := context.Background(); l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, fmt.Sprintf(format, args...))
	}
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
