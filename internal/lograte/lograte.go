// Package lograte limits log lines about bad input, so that a peer opening
// thousands of junk streams costs a few lines per interval, not a line per
// stream.
//
// A Limiter writes the first Burst lines of each message per Interval; it
// counts the rest and, with the first line of a later interval (or at
// Flush), writes one summary: "suppressed similar log lines" with the
// message, the count and the interval. Lines are keyed by their message
// text, which is a constant in the code that logs them, never by peer or
// address: an attacker with many identities gets the same budget as one.
//
// Limits: at most maxKeys distinct messages are tracked; beyond that, lines
// of new messages share one budget. A Limiter never blocks and never starts
// a goroutine; its clock is injected.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultBurst    = 5
	maxKeys         = 256
	overflowKey     = "\x00other"
)

// Config configures a Limiter.
type Config struct {
	// Interval is the window the budget applies to; 0 means DefaultInterval.
	Interval time.Duration
	// Burst is how many lines of one message are written per Interval; 0
	// means DefaultBurst.
	Burst int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter rate-limits the lines it is given, per message, then writes them
// to its logger.
type Limiter struct {
	log *slog.Logger
	cfg Config

	mu   sync.Mutex // guards wins
	wins map[string]*window
}

type window struct {
	start      time.Time
	written    int
	suppressed int
	level      slog.Level
}

// New returns a Limiter writing to log (nil means slog.Default()).
func New(log *slog.Logger, cfg Config) *Limiter {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{log: log, cfg: cfg, wins: map[string]*window{}}
}

// Warn logs at warning level, within the budget of msg.
func (l *Limiter) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Info logs at info level, within the budget of msg.
func (l *Limiter) Info(msg string, args ...any) { l.Log(slog.LevelInfo, msg, args...) }

// Log writes msg at level if msg's budget for the current interval allows,
// else counts it.
func (l *Limiter) Log(level slog.Level, msg string, args ...any) {
	l.LogKeyed(level, msg, msg, args...)
}

// LogKeyed is Log with the budget of key, for a msg that varies (a
// formatted line whose format string is the key).
func (l *Limiter) LogKeyed(level slog.Level, key, msg string, args ...any) {
	now := l.cfg.Now()
	l.mu.Lock()
	w := l.wins[key]
	if w == nil && len(l.wins) >= maxKeys {
		key = overflowKey
		w = l.wins[key]
	}
	if w == nil {
		w = &window{start: now}
		l.wins[key] = w
	}
	var summary int
	var summaryLevel slog.Level
	if now.Sub(w.start) >= l.cfg.Interval {
		summary, summaryLevel = w.suppressed, w.level
		*w = window{start: now}
	}
	w.level = level
	write := w.written < l.cfg.Burst
	if write {
		w.written++
	} else {
		w.suppressed++
	}
	l.mu.Unlock()
	if summary > 0 {
		l.summary(summaryLevel, key, summary)
	}
	if write {
		l.log.Log(context.Background(), level, msg, args...)
	}
}

// Flush writes the summaries of lines suppressed so far and starts new
// intervals.
func (l *Limiter) Flush() {
	type sum struct {
		key   string
		n     int
		level slog.Level
	}
	var out []sum
	l.mu.Lock()
	for k, w := range l.wins {
		if w.suppressed > 0 {
			out = append(out, sum{k, w.suppressed, w.level})
		}
		delete(l.wins, k)
	}
	l.mu.Unlock()
	for _, s := range out {
		l.summary(s.level, s.key, s.n)
	}
}

func (l *Limiter) summary(level slog.Level, key string, n int) {
	if key == overflowKey {
		key = "(other messages)"
	}
	l.log.Log(context.Background(), level, "suppressed similar log lines", "msg", key, "count", n, "interval", l.cfg.Interval)
}
