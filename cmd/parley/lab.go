package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/lab/natlab"
	"github.com/parley-net/parley/lab/netlab"
)

func labCmd() *cli.Command {
	return &cli.Command{
		Name:  "lab",
		Usage: "researchers' harness: real parley processes in a lab of real NATs",
		Subcommands: []*cli.Command{outageCmd(), labScaleCmd(), {
			Name: "nat",
			Usage: "call between NAT types in network namespaces with kernel NATs (root only): " +
				"tier, setup time and audio correlation per pair",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "matrix", Usage: "call every ordered pair of types (default: each type calls its own type)"},
				&cli.StringFlag{Name: "types", Usage: "comma-separated NAT `TYPES` (default: all of public, full-cone, restricted, port-restricted, symmetric, udp-blocked)"},
				&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
				&cli.StringFlag{Name: "fault", Usage: "finally SIGKILL `WHAT` in the middle of calls running at once and report what each heard: " +
					"cloud (the cloud relay) or supernode: calls relayed through it, public → public, symmetric → symmetric and public → port-restricted (as far as --types has them), " +
					"must move to the other relay tier with at most 3 s of silence, and a direct call must not notice; " +
					"caller: the caller's daemon of a direct call (port-restricted, else restricted, full-cone or public), " +
					"whose callee must end the call within 12 s and then take a call from the restarted caller"},
				&cli.IntFlag{Name: "loss", Usage: "drop `PCT` percent of the UDP datagrams at each caller's NAT, both ways, at random (nftables numgen), and report the audio each call concealed"},
				&cli.DurationFlag{Name: "direct-after", Usage: "drop UDP between each call's two devices until `D` after it is placed, so it starts relayed and must move to a direct pair (punchable pairs only)"},
				&cli.StringFlag{Name: "binary", Usage: "parley `BINARY` to run in the lab (default: this one)"},
				&cli.DurationFlag{Name: "audio", Value: natlab.DefaultAudio, Usage: "audio sent by each call once connected"},
				&cli.StringFlag{Name: "dir", Usage: "keep homes, recordings and logs in `DIR` (default: a temporary directory, removed)"},
			},
			Action: runLabNat,
		}},
	}
}

// runLabNat runs the NAT matrix and prints it as a table or JSON.
func runLabNat(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("parley lab nat takes no arguments (got %q)", c.Args().First())
	}
	if err := netlab.Available(); err != nil {
		return err
	}
	types, err := natlab.ParseTypes(c.String("types"))
	if err != nil {
		return fmt.Errorf("--types: %w", err)
	}
	log, err := logger(c, "warn")
	if err != nil {
		return err
	}
	opts := natlab.Options{Binary: c.String("binary"), Types: types, Audio: c.Duration("audio"), DirectAfter: c.Duration("direct-after"), LossPct: c.Int("loss"),
		Fault: c.String("fault"), Dir: c.String("dir"), Progress: os.Stderr, Logger: log.With(slog.String("subsystem", "netlab"))}
	if !c.Bool("matrix") {
		opts.Pairs = natlab.SameTypePairs(types)
	}
	ctx, stop := signalContext()
	defer stop()
	m, err := natlab.RunMatrix(ctx, opts)
	if m != nil {
		if c.Bool("json") {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(m); jerr != nil {
				return jerr
			}
		} else if terr := m.WriteTable(os.Stdout); terr != nil {
			return terr
		}
	}
	if err != nil {
		return err
	}
	return natVerdict(m)
}

// natVerdict is the error of a matrix in which a call failed, or a fault
// call did not do what it should; nil when all held.
func natVerdict(m *natlab.Matrix) error {
	failed := 0
	for _, p := range m.Pairs {
		if !p.OK {
			failed++
		}
	}
	switch {
	case failed > 0:
		return fmt.Errorf("%d of %d calls failed", failed, len(m.Pairs))
	case m.Fault != nil && m.Fault.KilledAfterMS == 0:
		return errors.New("fault: not every fault call became active, nothing was killed")
	case m.Fault != nil:
		var bad []string
		for _, fc := range m.Fault.Calls {
			if !fc.Held(m.Fault.Killed) {
				bad = append(bad, fmt.Sprintf("%s → %s%s (%s)", fc.Call.Caller, fc.Call.Callee, pathFlag(fc.Call.ForcedPath), fc.Expect))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("fault %s: %d of %d calls did not do what they should: %s; see the fault lines", m.Fault.Killed, len(bad), len(m.Fault.Calls), strings.Join(bad, ", "))
		}
	}
	return nil
}

func pathFlag(path string) string {
	if path == "" {
		return ""
	}
	return " --path " + path
}
