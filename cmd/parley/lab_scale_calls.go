package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/lab/scale"
)

// labScaleCallsCmd is `parley lab scale calls`: how many calls at once this
// machine carries at MOS ≥ 4, direct or through one relay.
func labScaleCallsCmd() *cli.Command {
	return &cli.Command{
		Name: "calls",
		Usage: "increasing numbers of simultaneous calls between real nodes on 127.0.0.1 (both ends in this process), " +
			"speech both ways, until a call is heard below the MOS floor: how many calls this machine carries",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "levels", Usage: "comma-separated calls at once to try, increasing (default " + joinInts(scale.DefaultCallLevels) + ")"},
			&cli.DurationFlag{Name: "audio", Value: scale.DefaultCallAudio, Usage: "how long each level's calls are measured"},
			&cli.StringFlag{Name: "relay", Usage: "force both ends of every call through one TURN relay: supernode or cloud (default: direct)"},
			&cli.Float64Flag{Name: "min-mos", Value: scale.DefaultMinMOS, Usage: "the MOS both ends of a call must hear"},
			&cli.DurationFlag{Name: "budget", Value: scale.DefaultCallBudget, Usage: "start no level after this long"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
		},
		Action: scaleAction("calls", func(ctx context.Context, c *cli.Context) (*scale.CallsResult, error) {
			var levels []int
			if s := c.String("levels"); s != "" {
				for _, f := range strings.Split(s, ",") {
					n, err := strconv.Atoi(strings.TrimSpace(f))
					if err != nil {
						return nil, fmt.Errorf("--levels: %q is not a number", f)
					}
					levels = append(levels, n)
				}
			}
			return scale.RunCalls(ctx, scale.CallsOptions{Levels: levels, Audio: c.Duration("audio"), Relay: c.String("relay"),
				MinMOS: c.Float64("min-mos"), Budget: c.Duration("budget"), Progress: os.Stderr})
		}, func(res *scale.CallsResult) bool { return res != nil && len(res.Levels) > 0 }, func(res *scale.CallsResult) error {
			if res.Carried == 0 {
				return fmt.Errorf("not even %d call was heard at MOS ≥ %.1f", res.Levels[0].Calls, res.MinMOS)
			}
			return nil
		}),
	}
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
