package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
)

func statusCmd() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show what the running daemon is",
		Action: func(c *cli.Context) error {
			cl, err := dial(c)
			if err != nil {
				return err
			}
			st, err := cl.Status(c.Context)
			if err != nil {
				return err
			}
			fmt.Printf("handle       %s\npeer ID      %s\nfingerprint  %s\npeers        %d\n", st.Handle, st.PeerID, st.Fingerprint, st.Peers)
			fmt.Printf("state        %s since %s\n", st.State, st.Since.Local().Format(time.TimeOnly))
			if st.OfflineReason != "" {
				fmt.Printf("             %s\n", st.OfflineReason)
			}
			for _, a := range st.Addrs {
				fmt.Println("  " + a)
			}
			return nil
		},
	}
}
