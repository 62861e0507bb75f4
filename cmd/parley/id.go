package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node"
)

func idCmd() *cli.Command {
	return &cli.Command{
		Name:  "id",
		Usage: "this device's identity",
		Subcommands: []*cli.Command{
			idInitCmd(), idLinkCmd(), idJoinCmd(), idDevicesCmd(), idUnlinkCmd(), idShowCmd(),
		},
	}
}

func idInitCmd() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create the device key and the account key for a handle",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "handle", Usage: "the name others reach you by (2-32 of a-z 0-9 _ . -); required"},
			&cli.StringFlag{Name: "device", Usage: "a name for this device (default: the host name)"},
		},
		Action: func(c *cli.Context) error {
			if c.String("handle") == "" {
				return cli.Exit("id init needs --handle NAME: the name others reach you by", exitUsage)
			}
			id, err := node.InitIdentity(c.String("home"), c.String("handle"), c.String("device"), time.Now())
			if err != nil {
				return err
			}
			printIdentity(id)
			return nil
		},
	}
}

func idLinkCmd() *cli.Command {
	return &cli.Command{
		Name:  "link",
		Usage: "print a one-time code that links a new device to this account (needs the daemon)",
		Action: func(c *cli.Context) error {
			cl, err := dial(c)
			if err != nil {
				return err
			}
			code, err := cl.LinkCode(c.Context)
			if err != nil {
				return err
			}
			fmt.Printf("%s\n\nOn the new device, within %s and once only:\n  parley --home NEW-HOME id join %s --bootstrap <supernode multiaddr>\n",
				code, node.LinkCodeTTL, code)
			return nil
		},
	}
}

func idJoinCmd() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "make this --home a new device of the account that printed CODE",
		ArgsUsage: "CODE",
		Flags: []cli.Flag{
			bootstrapFlag,
			&cli.StringFlag{Name: "device", Usage: "a name for this device (default: the host name)"},
		},
		Action: func(c *cli.Context) error {
			code, err := oneArg(c, "CODE")
			if err != nil {
				return err
			}
			boot, err := discovery.ParseAddrs(c.StringSlice("bootstrap"))
			if err != nil {
				return err
			}
			name := c.String("device")
			if name == "" {
				name, _ = os.Hostname()
			}
			id, err := node.JoinAccount(c.Context, node.JoinOptions{Home: c.String("home"), Code: code, DeviceName: name, Bootstrap: boot})
			if err != nil {
				return err
			}
			printIdentity(id)
			fmt.Println("linked: start 'parley daemon' here; it copies the history from another device of the account")
			return nil
		},
	}
}

func idDevicesCmd() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list the account's devices",
		Action: func(c *cli.Context) error {
			cl, err := dial(c)
			if err != nil {
				return err
			}
			devs, err := cl.Devices(c.Context)
			if err != nil {
				return err
			}
			st, err := cl.Status(c.Context)
			if err != nil {
				return err
			}
			listed := false
			for _, d := range devs {
				me := ""
				if d.PeerID == st.PeerID {
					me, listed = "  (this device)", true
				}
				fmt.Printf("%s  %s%s\n", d.PeerID, d.Name, me)
			}
			if !listed {
				return fmt.Errorf("this device (%s) was unlinked from %s: it no longer sends or receives as %s", shortID(st.PeerID), st.Handle, st.Handle)
			}
			return nil
		},
	}
}

func idUnlinkCmd() *cli.Command {
	return &cli.Command{
		Name:      "unlink",
		Usage:     "remove a device from the account: it no longer receives new messages",
		ArgsUsage: "PEERID",
		Action: func(c *cli.Context) error {
			p, err := oneArg(c, "PEERID")
			if err != nil {
				return err
			}
			cl, err := dial(c)
			if err != nil {
				return err
			}
			devs, err := cl.Unlink(c.Context, p)
			if err != nil {
				return err
			}
			fmt.Printf("unlinked %s; the account has %d device(s) left\n", p, len(devs))
			return nil
		},
	}
}

func idShowCmd() *cli.Command {
	return &cli.Command{
		Name:  "show",
		Usage: "print handle, peer ID and fingerprint",
		Action: func(c *cli.Context) error {
			id, err := node.LoadIdentity(c.String("home"))
			if err != nil {
				return err
			}
			printIdentity(id)
			return nil
		},
	}
}

func printIdentity(id *node.Identity) {
	fmt.Printf("handle       %s\ndevice       %s\npeer ID      %s\nfingerprint  %s\nhome         %s\n",
		id.Handle(), id.DeviceName(), id.PeerID, id.Fingerprint(), id.Home)
}
