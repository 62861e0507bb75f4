package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/lab"
)

func demoCmd() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run 4 supernodes and 3 devices (alice, bob's laptop and phone) on 127.0.0.1 in this process: chat, a call that rings both of bob's devices, mail for the offline phone",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON summary instead of the transcript"},
			&cli.IntFlag{Name: "messages", Value: 10, Usage: "messages each way"},
			&cli.BoolFlag{Name: "browser", Usage: "also call and be called by headless Chromium in alice's web app (needs chromium)"},
		},
		Action: func(c *cli.Context) error {
			log, err := logger(c, "error")
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			opt := lab.DemoOptions{Messages: c.Int("messages"), Logger: log, Browser: c.Bool("browser")}
			if !c.Bool("json") {
				opt.Transcript = os.Stdout
			}
			rep, err := lab.RunDemo(ctx, opt)
			if c.Bool("json") && rep != nil {
				json.NewEncoder(os.Stdout).Encode(rep)
			}
			if err != nil {
				return cli.Exit("demo failed: "+oneLine(err.Error()), 1)
			}
			if !c.Bool("json") {
				fmt.Println("demo ok")
			}
			return nil
		},
	}
}
