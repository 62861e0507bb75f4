package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/lab/netlab"
	"github.com/parley-net/parley/lab/outage"
)

func outageCmd() *cli.Command {
	var names []string
	for _, s := range outage.Scenarios {
		names = append(names, s.Name+" ("+s.Description+")")
	}
	return &cli.Command{
		Name: "outage",
		Usage: "replay real outages against p2p, supernode and cloud topologies of real parley processes behind kernel NATs (root only), " +
			"and write a report: summary.json, runs.csv, events.csv, timeline.csv, plots and report.md",
		Description: "Scenarios: " + strings.Join(names, "; ") + ".",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "outage-report", Usage: "write the report, homes and logs to `DIR`"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the workload and of the servers a fault picks"},
			&cli.BoolFlag{Name: "quick", Usage: "6 devices, 30 s of workload, scenarios none, kakao-2022 and msn-2001 with times scaled by 1/6"},
			&cli.BoolFlag{Name: "json", Usage: "print summary.json to stdout"},
			&cli.StringFlag{Name: "topologies", Usage: "comma-separated `LIST` of p2p, supernode, cloud (default: all)"},
			&cli.StringFlag{Name: "scenarios", Usage: "comma-separated `LIST` (default: all, or the quick set)"},
			&cli.IntFlag{Name: "devices", Usage: "devices (default 12, quick 6)"},
			&cli.Float64Flag{Name: "mobile", Usage: "share of devices on the mobile profile (default 0.25)"},
			&cli.DurationFlag{Name: "length", Usage: "workload length (default 90s, quick 30s)"},
			&cli.DurationFlag{Name: "outage-at", Usage: "when the fault strikes (default 20s, quick 10s)"},
			&cli.IntFlag{Name: "load-threshold", Usage: "skype-2010: a surviving supernode with more established TCP connections crashes too (0: off)"},
			&cli.IntFlag{Name: "parallel", Usage: "runs at once (default: the topologies of a scenario together)"},
			&cli.StringFlag{Name: "binary", Usage: "parley `BINARY` to run in the lab (default: this one)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("parley lab outage takes no arguments (got %q)", c.Args().First())
			}
			if err := netlab.Available(); err != nil {
				return err
			}
			topos, err := outage.ParseTopologies(c.String("topologies"))
			if err != nil {
				return fmt.Errorf("--topologies: %w", err)
			}
			opts := outage.Options{Binary: c.String("binary"), Out: c.String("out"), Seed: c.Uint64("seed"), Quick: c.Bool("quick"),
				Topologies: topos, OutageAt: c.Duration("outage-at"), LoadThreshold: c.Int("load-threshold"), Parallel: c.Int("parallel"),
				Progress: os.Stderr}
			if c.IsSet("scenarios") {
				if opts.Scenarios, err = outage.ParseScenarios(c.String("scenarios")); err != nil {
					return fmt.Errorf("--scenarios: %w", err)
				}
			}
			opts.Workload.Devices = c.Int("devices")
			opts.Workload.Mobile = c.Float64("mobile")
			opts.Workload.Length = c.Duration("length")
			log, err := logger(c, "warn")
			if err != nil {
				return err
			}
			opts.Logger = log.With(slog.String("subsystem", "netlab"))
			ctx, stop := signalContext()
			defer stop()
			rep, err := outage.Run(ctx, opts)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep.Summary())
			}
			fmt.Printf("report: %s\n", rep.Out+"/"+outage.ReportFile)
			return nil
		},
	}
}
