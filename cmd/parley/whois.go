package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
)

func whoisCmd() *cli.Command {
	return &cli.Command{
		Name:      "whois",
		Usage:     "look a handle up in the DHT",
		ArgsUsage: "HANDLE",
		Action: func(c *cli.Context) error {
			h, err := oneArg(c, "HANDLE")
			if err != nil {
				return err
			}
			cl, err := dial(c)
			if err != nil {
				return err
			}
			w, err := cl.Whois(c.Context, h)
			if err != nil {
				return err
			}
			fmt.Printf("handle       %s\nfingerprint  %s\nexpires      %s\nlookup       %.1f ms\ndevices:\n", w.Handle, w.Fingerprint, w.Expires.Format(time.RFC3339), w.LookupMS)
			for _, d := range w.Devices {
				fmt.Printf("  %s  %s\n", d.PeerID, d.Name)
			}
			if w.Disagree {
				fmt.Printf("WARNING: supernodes disagree on who %s is; accounts named:\n", w.Handle)
				for _, cl := range w.Claims {
					mark := " "
					if cl.Chosen {
						mark = "*"
					}
					attested := "no quorum"
					if cl.AttestedMS > 0 {
						attested = "claimed " + time.UnixMilli(cl.AttestedMS).UTC().Format(time.RFC3339)
					}
					fmt.Printf("%s %s  (%d servers, %d witnesses, %s)\n", mark, cl.Fingerprint, cl.Servers, cl.Witnesses, attested)
				}
			}
			return nil
		},
	}
}
