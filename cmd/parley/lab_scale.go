package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/lab/scale"
)

// labScaleCmd is `parley lab scale`: the scale measurements of
// BENCHMARKS.md's Scale section.
func labScaleCmd() *cli.Command {
	return &cli.Command{
		Name:        "scale",
		Usage:       "scale measurements: a DHT of thousands, a supernode holding many devices, a mailbox of a million envelopes, many calls",
		Subcommands: []*cli.Command{labScaleDHTCmd()},
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
			&cli.DurationFlag{Name: "latency", Value: scale.DefaultLatency, Usage: "one-way delay of every link"},
			&cli.Float64Flag{Name: "churn", Value: 0.1, Usage: "fraction of servers replaced per minute while resolving"},
			&cli.DurationFlag{Name: "duration", Value: scale.DefaultDuration, Usage: "time the lookups are spread over"},
			&cli.IntFlag{Name: "lookups", Value: scale.DefaultLookups, Usage: "resolutions to make"},
			&cli.IntFlag{Name: "parallel", Value: scale.DefaultParallel, Usage: "joins, publishes and lookups in flight"},
			&cli.BoolFlag{Name: "refresh", Usage: "have every server refresh its routing table once all have joined (a dozen lookups each)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			res, err := scale.RunDHT(ctx, scale.DHTOptions{
				Servers: c.Int("servers"), Devices: c.Int("devices"), Latency: c.Duration("latency"),
				Churn: c.Float64("churn"), Duration: c.Duration("duration"), Lookups: c.Int("lookups"),
				Parallel: c.Int("parallel"), Refresh: c.Bool("refresh"), Progress: os.Stderr,
			})
			if res != nil && res.Lookups > 0 {
				if c.Bool("json") {
					if jerr := printJSON(res); jerr != nil {
						return jerr
					}
				} else if terr := res.WriteTable(os.Stdout); terr != nil {
					return terr
				}
			}
			if err != nil {
				return fmt.Errorf("scale dht: %w", err)
			}
			if res.Resolved < res.Lookups {
				return fmt.Errorf("scale dht: %d of %d lookups failed", res.Lookups-res.Resolved, res.Lookups)
			}
			return nil
		},
	}
}
