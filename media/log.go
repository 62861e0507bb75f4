package media

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/pion/logging"
)

// pionLogs adapts pion's leveled loggers to slog, one level down: pion's
// Info is internal progress ("peer connection state changed") and becomes
// Debug; its Warn is routinely benign (streams closing during teardown)
// and becomes Info; Error stays Error. A few warnings every good call logs
// (benignWarnings) become Debug, so they do not read like failures.
type pionLogs struct {
	log *slog.Logger
}

const levelTrace = slog.LevelDebug - 4

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct {
	log *slog.Logger
}

// benignWarnings are the starts of pion warnings that every good call logs:
// ICE pings before the first candidate pair exists.
var benignWarnings = []string{
	"Failed to ping without candidate pairs",
}

// warnLevel is the level of a pion warning.
func warnLevel(msg string) slog.Level {
	for _, b := range benignWarnings {
		if strings.HasPrefix(msg, b) {
			return slog.LevelDebug
		}
	}
	return slog.LevelInfo
}

func (l pionLogger) emit(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l pionLogger) emitf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  { l.emit(levelTrace, msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.emitf(levelTrace, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.emit(slog.LevelDebug, msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.emit(warnLevel(msg), msg) }
func (l pionLogger) Warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.emit(warnLevel(msg), msg)
}
func (l pionLogger) Error(msg string)                  { l.emit(slog.LevelError, msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.emitf(slog.LevelError, format, args...) }
