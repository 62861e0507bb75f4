package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

func groupCmd() *cli.Command {
	return &cli.Command{
		Name:  "group",
		Usage: "small group conversations (up to 32 members); chat with one as '#NAME'",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "make a group of you and the handles given",
				ArgsUsage: "NAME HANDLE…",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return cli.Exit("usage: parley group create NAME HANDLE…", exitUsage)
					}
					cl, err := dial(c)
					if err != nil {
						return err
					}
					g, err := cl.CreateGroup(c.Context, strings.TrimPrefix(c.Args().First(), "#"), c.Args().Tail())
					if err != nil {
						return err
					}
					fmt.Printf("#%s: %s\n", g.Name, strings.Join(g.Members, ", "))
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "the groups you are in",
				Action: func(c *cli.Context) error {
					cl, err := dial(c)
					if err != nil {
						return err
					}
					gs, err := cl.Groups(c.Context)
					if err != nil {
						return err
					}
					for _, g := range gs {
						fmt.Printf("#%-16s %s\n", g.Name, strings.Join(g.Members, ", "))
					}
					return nil
				},
			},
		},
	}
}
