package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/internal/pionlog"
)

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace": // pion's own trace: every ICE check and STUN message
		return pionlog.LevelTrace, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, cli.Exit(fmt.Sprintf("--log-level %q: use trace, debug, info, warn or error", s), exitUsage)
}

// logger is the command's logger: at --log-level, or at def when the flag
// is not given.
func logger(c *cli.Context, def string) (*slog.Logger, error) {
	lv := c.String("log-level")
	if !c.IsSet("log-level") {
		lv = def
	}
	level, err := parseLevel(lv)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.String("log-format") == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

func checkFormat(f string) error {
	if f != "text" && f != "json" {
		return cli.Exit(fmt.Sprintf("--log-format %q: use text or json", f), exitUsage)
	}
	return nil
}
