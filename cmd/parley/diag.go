package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/node/netcheck"
)

func netcheckCmd() *cli.Command {
	return &cli.Command{
		Name:  "netcheck",
		Usage: "measure this network: UDP, NAT mapping, TURN over UDP/TCP/TLS at each relay tier, round trips, IPv6 (through the running daemon, or without one given --bootstrap or --cloud-relay)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			// No environment variables: PARLEY_BOOTSTRAP set for the
			// daemon must not turn this into a check without it.
			&cli.StringSliceFlag{Name: "bootstrap", Aliases: []string{"b"}, Usage: "check without a daemon against this supernode `MULTIADDR` (repeatable)"},
			&cli.StringSliceFlag{Name: "cloud-relay", Usage: "check without a daemon against this cloud relay `MULTIADDR` (repeatable)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("parley netcheck takes no arguments (got %q)", c.Args().First())
			}
			var r *netcheck.Report
			if len(c.StringSlice("bootstrap"))+len(c.StringSlice("cloud-relay")) > 0 {
				boot, err := discovery.ParseAddrs(c.StringSlice("bootstrap"))
				if err != nil {
					return fmt.Errorf("--bootstrap: %w", err)
				}
				cloud, err := discovery.ParseAddrs(c.StringSlice("cloud-relay"))
				if err != nil {
					return fmt.Errorf("--cloud-relay: %w", err)
				}
				log, err := logger(c, "error")
				if err != nil {
					return err
				}
				if r, err = node.NetcheckWithout(c.Context, boot, cloud, log); err != nil {
					return err
				}
			} else {
				cl, err := dial(c)
				if err != nil {
					return err
				}
				if r, err = cl.Netcheck(c.Context); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return r.WriteText(os.Stdout)
		},
	}
}

func pingCmd() *cli.Command {
	return &cli.Command{
		Name:      "ping",
		Usage:     "ping every device of a handle over libp2p: path (direct, or relay via a supernode's circuit), transport and round trip per probe",
		ArgsUsage: "HANDLE",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Value: 5, Usage: "probes to send (0: until Ctrl-C)"},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"i"}, Value: time.Second, Usage: "time between probes"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object a probe and device"},
		},
		Action: func(c *cli.Context) error {
			h, err := oneArg(c, "HANDLE")
			if err != nil {
				return err
			}
			if c.Int("count") < 0 || c.Duration("interval") <= 0 {
				return errors.New("--count must be 0 or more and --interval positive")
			}
			cl, err := dial(c)
			if err != nil {
				return err
			}
			last := map[string]string{}
			answered := 0
			enc := json.NewEncoder(os.Stdout)
			for seq := 1; c.Int("count") == 0 || seq <= c.Int("count"); seq++ {
				if seq > 1 {
					select {
					case <-c.Context.Done():
						return pingDone(answered)
					case <-time.After(c.Duration("interval")):
					}
				}
				res, err := cl.Ping(c.Context, h)
				if err != nil && res == nil {
					if c.Context.Err() != nil {
						return pingDone(answered)
					}
					return err
				}
				for _, r := range res {
					if r.Error == "" {
						answered++
					}
					if c.Bool("json") {
						enc.Encode(struct {
							Seq int `json:"seq"`
							node.PingResult
						}{seq, r})
						continue
					}
					fmt.Println(pingLine(seq, r, last[r.Device]))
					if r.Error == "" {
						last[r.Device] = pathName(r)
					}
				}
			}
			return pingDone(answered)
		},
	}
}

func pingDone(answered int) error {
	if answered == 0 {
		return errors.New("no probe was answered")
	}
	return nil
}

// pathName is how ping names a path: "direct", or "relay (circuit via
// …SUPERNODE)".
func pathName(r node.PingResult) string {
	if r.Tier == node.TierDirect {
		return "direct"
	}
	return fmt.Sprintf("relay (circuit via %s)", strings.TrimSpace(r.ViaTier+" "+shortID(r.Via)))
}

func pingLine(seq int, r node.PingResult, was string) string {
	if r.Error != "" {
		return fmt.Sprintf("%d  %s  no answer: %s", seq, shortID(r.Device), r.Error)
	}
	now := pathName(r)
	line := fmt.Sprintf("%d  %s  %-36s %-8s %7.1f ms  %s", seq, shortID(r.Device), now, r.Transport, r.RTTMS, r.Remote)
	if was != "" && was != now {
		line += fmt.Sprintf("\n   path changed: %s -> %s", was, now)
	}
	return line
}
