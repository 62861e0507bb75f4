package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/lab/scale"
)

// labScaleCmd is `parley lab scale`: the scale measurements of
// BENCHMARKS.md's Scale section.
func labScaleCmd() *cli.Command {
	return &cli.Command{
		Name:        "scale",
		Usage:       "scale measurements: a DHT of thousands, a supernode holding many devices, a mailbox of a million envelopes, many calls",
		Subcommands: []*cli.Command{labScaleDHTCmd(), labScaleSupernodeCmd(), labScaleLoadCmd(), labScaleMailboxCmd(), labScaleCallsCmd()},
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printResult prints a lab's result as JSON with --json, else as its table.
func printResult(c *cli.Context, res tabler) error {
	if c.Bool("json") {
		return printJSON(res)
	}
	return res.WriteTable(os.Stdout)
}

// tabler is a scale lab's result: a table, or JSON with --json.
type tabler interface{ WriteTable(io.Writer) error }

// scaleAction is the Action of a `lab scale` command: run it under a
// signal context, print what it measured (when shown says there is
// something), then fail with its error, or with what verdict finds wrong
// in the result.
func scaleAction[R tabler](name string, run func(context.Context, *cli.Context) (R, error), shown func(R) bool, verdict func(R) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := noArgs(c); err != nil {
			return err
		}
		ctx, stop := signalContext()
		defer stop()
		res, err := run(ctx, c)
		if shown(res) {
			if perr := printResult(c, res); perr != nil {
				return perr
			}
		}
		if err != nil {
			return fmt.Errorf("scale %s: %w", name, err)
		}
		if err := verdict(res); err != nil {
			return fmt.Errorf("scale %s: %w", name, err)
		}
		return nil
	}
}

func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("parley lab scale %s takes no arguments (got %q)", c.Command.Name, c.Args().First())
	}
	return nil
}

func labScaleDHTCmd() *cli.Command {
	return &cli.Command{
		Name: "dht",
		Usage: "DHT servers (supernodes) and clients (devices) in one process on go-libp2p's mock network: " +
			"publish a handle record per device, resolve random handles while servers churn; rounds, time, success",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "servers", Value: 200, Usage: "DHT servers (supernodes)"},
			&cli.IntFlag{Name: "devices", Usage: "DHT clients that publish and resolve (0: servers/10, at least 10)"},
			&cli.IntFlag{Name: "publishers", Usage: "devices that publish a record, which lookups ask for (0: all)"},
			&cli.DurationFlag{Name: "latency", Value: scale.DefaultLatency, Usage: "one-way delay of every link"},
			&cli.Float64Flag{Name: "churn", Value: 0.1, Usage: "fraction of servers replaced per minute while resolving"},
			&cli.DurationFlag{Name: "duration", Value: scale.DefaultDuration, Usage: "time the lookups are spread over"},
			&cli.IntFlag{Name: "lookups", Value: scale.DefaultLookups, Usage: "resolutions to make"},
			&cli.IntFlag{Name: "parallel", Value: scale.DefaultParallel, Usage: "joins, publishes and lookups in flight"},
			&cli.BoolFlag{Name: "refresh", Usage: "have every server refresh its routing table once all have joined (a dozen lookups each)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
		},
		Action: scaleAction("dht", func(ctx context.Context, c *cli.Context) (*scale.DHTResult, error) {
			return scale.RunDHT(ctx, scale.DHTOptions{
				Servers: c.Int("servers"), Devices: c.Int("devices"), Publishers: c.Int("publishers"), Latency: c.Duration("latency"),
				Churn: c.Float64("churn"), Duration: c.Duration("duration"), Lookups: c.Int("lookups"),
				Parallel: c.Int("parallel"), Refresh: c.Bool("refresh"), Progress: os.Stderr,
			})
		}, func(res *scale.DHTResult) bool { return res != nil && res.Lookups > 0 }, func(res *scale.DHTResult) error {
			if res.Resolved < res.Lookups {
				return fmt.Errorf("%d of %d lookups failed", res.Lookups-res.Resolved, res.Lookups)
			}
			return nil
		}),
	}
}

func labScaleSupernodeCmd() *cli.Command {
	return &cli.Command{
		Name: "supernode",
		Usage: "a `parley supernode` on 127.0.0.1 and a load generator process connecting many devices (TCP, Noise, yamux): " +
			"memory per device, idle CPU, file descriptors, and what happens past the limit",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "devices", Value: 10000, Usage: "devices to connect"},
			&cli.IntFlag{Name: "over", Value: 0, Usage: "devices to try afterwards (past the limit)"},
			&cli.IntFlag{Name: "max-devices", Usage: "the supernode's --max-devices (0: its default)"},
			&cli.Float64Flag{Name: "nated", Value: 0.3, Usage: "share of devices that take a relay reservation"},
			&cli.DurationFlag{Name: "republish", Value: 10 * time.Minute, Usage: "each device's handle-record republish interval"},
			&cli.DurationFlag{Name: "idle", Value: 30 * time.Second, Usage: "how long idle CPU is measured"},
			&cli.IntFlag{Name: "generators", Usage: "load-generator processes sharing the devices (0: as many as the file-descriptor limit needs, two per device)"},
			&cli.StringFlag{Name: "binary", Usage: "parley `BINARY` to run (default: this one)"},
			&cli.StringFlag{Name: "dir", Usage: "keep the supernode's home and log in `DIR`"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
		},
		Action: scaleAction("supernode", func(ctx context.Context, c *cli.Context) (*scale.SupernodeResult, error) {
			return scale.RunSupernode(ctx, scale.SupernodeOptions{
				Binary: c.String("binary"), Devices: c.Int("devices"), Over: c.Int("over"), MaxDevices: c.Int("max-devices"),
				NATed: c.Float64("nated"), Republish: c.Duration("republish"), Idle: c.Duration("idle"),
				Generators: c.Int("generators"), Dir: c.String("dir"), Progress: os.Stderr,
			})
		}, func(res *scale.SupernodeResult) bool { return res != nil }, func(res *scale.SupernodeResult) error {
			if !res.Alive {
				return fmt.Errorf("the supernode died (see its log)")
			}
			return nil
		}),
	}
}

// labScaleLoadCmd is the load generator `scale supernode` runs as its own
// process; hidden, since it only speaks to that parent.
func labScaleLoadCmd() *cli.Command {
	return &cli.Command{
		Name:   "load",
		Hidden: true,
		Usage:  "the load generator of `parley lab scale supernode` (reads go/check lines, writes JSON lines)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "target", Required: true},
			&cli.IntFlag{Name: "devices", Required: true},
			&cli.IntFlag{Name: "over"},
			&cli.IntFlag{Name: "first"},
			&cli.Float64Flag{Name: "nated"},
			&cli.DurationFlag{Name: "republish"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signalContext()
			defer stop()
			return scale.RunLoad(ctx, scale.LoadOptions{Target: c.String("target"), Devices: c.Int("devices"), Over: c.Int("over"), First: c.Int("first"),
				NATed: c.Float64("nated"), Republish: c.Duration("republish"), Control: os.Stdin, Report: os.Stdout, Progress: os.Stderr})
		},
	}
}

func labScaleMailboxCmd() *cli.Command {
	return &cli.Command{
		Name: "mailbox",
		Usage: "one supernode mailbox (SQLite on disk, over libp2p on 127.0.0.1) filled to a million envelopes: " +
			"deposit and fetch latency, bytes on disk per envelope, time to re-replicate a dead holder's share",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "envelopes", Value: 1_000_000, Usage: "envelopes the mailbox holds; all but --deposits are preloaded in large transactions through the server's store code"},
			&cli.IntFlag{Name: "deposits", Value: 20_000, Usage: "envelopes deposited over libp2p (16 a put) once the rest are in, and timed"},
			&cli.DurationFlag{Name: "duration", Value: 4 * time.Minute, Usage: "longest measured deposit phase, and longest re-replication phase"},
			&cli.IntFlag{Name: "size", Value: 512, Usage: "bytes of each envelope"},
			&cli.IntFlag{Name: "recipients", Value: 1000, Usage: "devices the envelopes are spread over"},
			&cli.IntFlag{Name: "senders", Value: 16, Usage: "devices depositing at once"},
			&cli.StringFlag{Name: "dir", Usage: "keep the mailboxes' databases in `DIR`"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
		},
		Action: scaleAction("mailbox", func(ctx context.Context, c *cli.Context) (*scale.MailboxResult, error) {
			return scale.RunMailbox(ctx, scale.MailboxOptions{Envelopes: c.Int("envelopes"), Deposits: c.Int("deposits"), Duration: c.Duration("duration"),
				Size: c.Int("size"), Recipients: c.Int("recipients"), Senders: c.Int("senders"), Dir: c.String("dir"), Progress: os.Stderr})
		}, func(res *scale.MailboxResult) bool { return res != nil }, func(res *scale.MailboxResult) error {
			if res.FetchLost > 0 || res.Refused > 0 {
				return fmt.Errorf("%d envelopes refused, %d missing at fetch", res.Refused, res.FetchLost)
			}
			return nil
		}),
	}
}
