package main

import (
	"fmt"
	"os/exec"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/node"
)

// uiFlag is the daemon's web app address.
var uiFlag = &cli.StringFlag{Name: "ui", Value: "127.0.0.1:0", EnvVars: []string{"PARLEY_UI"},
	Usage: "serve the local web app on `ADDR`, a loopback address (port 0: a free one); off turns it off. parley open prints a login link"}

// checkUIFlag checks --ui before the node starts.
func checkUIFlag(c *cli.Context) error {
	if a := c.String("ui"); a != "off" && a != "" {
		return node.CheckUIAddr(a)
	}
	return nil
}

// serveUI starts the daemon's web app as --ui asks.
func serveUI(c *cli.Context, n *node.Node) error {
	addr := c.String("ui")
	if addr == "off" || addr == "" {
		return nil
	}
	u, err := n.ServeUI(addr)
	if err != nil {
		return err
	}
	fmt.Printf("web app: http://%s/ (parley open prints a login link)\n", u.Addr())
	return nil
}

func openCmd() *cli.Command {
	return &cli.Command{
		Name:  "open",
		Usage: "print a one-time login link to the daemon's web app (chat and calls with the browser's microphone)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "launch", Usage: "also open it in the desktop's browser (xdg-open)"},
		},
		Action: func(c *cli.Context) error {
			cl, err := dial(c)
			if err != nil {
				return err
			}
			url, err := cl.UILogin(c.Context)
			if err != nil {
				return err
			}
			fmt.Println(url)
			if c.Bool("launch") {
				if err := exec.Command("xdg-open", url).Start(); err != nil {
					return fmt.Errorf("xdg-open: %w (open the link above by hand)", err)
				}
			}
			return nil
		},
	}
}
