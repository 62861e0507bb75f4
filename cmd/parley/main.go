// Command parley is the one parley binary: it wires flags to the node,
// supernode and lab packages and does nothing else.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/node"
)

func main() {
	if os.Getenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING") == "" {
		os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
	app := newApp()
	err := app.Run(permuteArgs(app, os.Args))
	if topic, ok := strings.CutPrefix(errText(err), "No help topic for "); ok {
		// 'parley help nosuch': urfave/cli's own words and exit code 3.
		err = cli.Exit(fmt.Sprintf("unknown command %s (see 'parley --help')", topic), exitUsage)
	}
	if err != nil {
		if msg := oneLine(node.ErrorText(err)); msg != "" {
			fmt.Fprintln(os.Stderr, "parley: "+msg)
		}
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func defaultHome() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "parley")
	}
	return ".parley"
}

// exitUsage is the exit code of a command line parley cannot make sense of
// (an unknown command or flag, a missing argument); 1 is every other failure.
const exitUsage = 2

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "parley",
		Usage:                "peer-to-peer voice and chat that keeps working when the cloud does not",
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "home", Value: defaultHome(), EnvVars: []string{"PARLEY_HOME"}, Usage: "directory holding keys, database and control socket"},
			&cli.StringFlag{Name: "log-level", EnvVars: []string{"PARLEY_LOG_LEVEL"},
				Usage: "trace (pion's ICE checks too), debug, info, warn or error (default: info for daemon, supernode and relay; warn for the lab; error for the demo)"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"PARLEY_LOG_FORMAT"}, Usage: "text (key=value) or json (one object a line)"},
			configFlag,
		},
		Before: func(c *cli.Context) error {
			if c.IsSet("log-level") {
				if _, err := parseLevel(c.String("log-level")); err != nil {
					return err
				}
			}
			if err := checkFormat(c.String("log-format")); err != nil {
				return err
			}
			return checkCommand(c)
		},
		// main prints every error as one line and picks the exit code;
		// urfave/cli must not print or exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			supernodeCmd(), daemonCmd(), idCmd(), whoisCmd(), chatCmd(),
			groupCmd(), callCmd(), callsCmd(), answerCmd(), relayCmd(), labCmd(),
			simpleCallVerb("reject", "decline a ringing call (the only one, or by ID)"),
			simpleCallVerb("hangup", "end a call (the only one, or by ID)"),
			statusCmd(), netcheckCmd(), pingCmd(), demoCmd(), openCmd(),
		},
	}
	app.OnUsageError = usageError
	setUsageErrors(app.Commands)
	return app
}

// usageError turns a flag parsing error into one line and exit code 2.
func usageError(c *cli.Context, err error, _ bool) error {
	name := strings.TrimSpace("parley " + cmdPath(c))
	return cli.Exit(fmt.Sprintf("%v (see '%s --help')", err, name), exitUsage)
}

// setUsageErrors gives every command the one-line usage error, and every
// command that only groups subcommands a check for an unknown subcommand
// (urfave/cli would print "No help topic" and exit 3).
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		switch {
		case c.Before != nil:
		case len(c.Subcommands) > 0 && c.Action == nil:
			c.Before = checkCommand
		default:
			c.Before = applyConfig
		}
		setUsageErrors(c.Subcommands)
	}
}

// cmdPath is the words of the command being run ("id init"; "" for the
// app itself). urfave/cli's FullName drops the parents of a subcommand.
func cmdPath(c *cli.Context) string {
	var words []string
	for _, l := range c.Lineage() {
		if l.Command != nil && l.Command.Name != "" && l.Command.Name != c.App.Name {
			words = append([]string{l.Command.Name}, words...)
		}
	}
	return strings.Join(words, " ")
}

// checkCommand refuses an unknown command or subcommand name.
func checkCommand(c *cli.Context) error {
	first := c.Args().First()
	if first == "" || strings.HasPrefix(first, "-") {
		return nil
	}
	known, where := c.App.Command(first) != nil, "parley"
	if c.Command != nil && c.Command.Name != "" {
		known, where = c.Command.Command(first) != nil, "parley "+cmdPath(c)
	}
	if known {
		return nil
	}
	return cli.Exit(fmt.Sprintf("unknown command %q (see '%s --help')", first, where), exitUsage)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

var bootstrapFlag = &cli.StringSliceFlag{Name: "bootstrap", Aliases: []string{"b"}, EnvVars: []string{"PARLEY_BOOTSTRAP"},
	Usage: "supernode multiaddr ending in /p2p/<id> (repeatable, or comma-separated)"}

func dial(c *cli.Context) (*node.Client, error) { return node.Dial(c.String("home")) }

func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", cli.Exit(fmt.Sprintf("usage: parley %s %s", cmdPath(c), what), exitUsage)
	}
	return c.Args().First(), nil
}

func shortID(s string) string {
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}
