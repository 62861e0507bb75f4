// Package pionlog is the one adapter from pion's leveled loggers
// (github.com/pion/logging) to log/slog, for every pion library parley
// uses (webrtc and ice in media, turn in internal/turnrelay).
//
// pion's levels are shifted one down: its Info is internal progress
// ("peer connection state changed"), its Warn routinely benign (streams
// closing during teardown), and it logs per packet at Info and Error when a
// remote party misbehaves, so a remote party must not be able to fill the
// log at the default level. Trace and Debug stay what they are, Info
// becomes Debug, Warn becomes Info and Error becomes Warn; a few warnings
// every good call logs (benignWarnings) become Debug.
//
// What is still logged at Info or above goes through a lograte.Limiter
// keyed by scope and format string: a few lines and a count per interval,
// never a line per bad packet. It never formats a message below the
// logger's level (pion logs on hot paths).
package pionlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pion/logging"

	"github.com/parley-net/parley/internal/lograte"
)

// LevelTrace is the slog level of pion's Trace, below Debug.
const LevelTrace = slog.LevelDebug - 4

// Factory is a pion logging.LoggerFactory writing to an slog.Logger.
type Factory struct {
	log   *slog.Logger
	limit *lograte.Limiter
}

var _ logging.LoggerFactory = Factory{}

// New is a factory writing to log, rate-limited by the clock now (nil:
// time.Now).
func New(log *slog.Logger, now func() time.Time) Factory {
	return Factory{log: log, limit: lograte.New(log, lograte.Config{Now: now})}
}

// NewLogger is the logger of one pion scope ("ice", "turn", …).
func (f Factory) NewLogger(scope string) logging.LeveledLogger {
	return Logger{log: f.log.With("pion", scope), scope: scope, limit: f.limit}
}

// Logger is one pion scope's logger.
type Logger struct {
	log   *slog.Logger
	scope string
	limit *lograte.Limiter
}

// benignWarnings are the starts of pion warnings that every good call logs:
// ICE pings before the first candidate pair exists.
var benignWarnings = []string{
	"Failed to ping without candidate pairs",
}

func warnLevel(msg string) slog.Level {
	for _, b := range benignWarnings {
		if strings.HasPrefix(msg, b) {
			return slog.LevelDebug
		}
	}
	return slog.LevelInfo
}

func (l Logger) print(level slog.Level, msg string) { l.printf(level, "%s", msg) }

func (l Logger) printf(level slog.Level, format string, args ...any) {
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

func (l Logger) Trace(msg string)                  { l.print(LevelTrace, msg) }
func (l Logger) Tracef(format string, args ...any) { l.printf(LevelTrace, format, args...) }
func (l Logger) Debug(msg string)                  { l.print(slog.LevelDebug, msg) }
func (l Logger) Debugf(format string, args ...any) { l.printf(slog.LevelDebug, format, args...) }
func (l Logger) Info(msg string)                   { l.print(slog.LevelDebug, msg) }
func (l Logger) Infof(format string, args ...any)  { l.printf(slog.LevelDebug, format, args...) }
func (l Logger) Warn(msg string)                   { l.print(warnLevel(msg), msg) }
func (l Logger) Warnf(format string, args ...any) {
	if !l.log.Enabled(context.Background(), slog.LevelInfo) {
		return // neither level a warning maps to (Info, Debug) is on
	}
	msg := fmt.Sprintf(format, args...)
	l.printf(warnLevel(msg), "%s", msg)
}
func (l Logger) Error(msg string)                  { l.print(slog.LevelWarn, msg) }
func (l Logger) Errorf(format string, args ...any) { l.printf(slog.LevelWarn, format, args...) }
