package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node"
)

func daemonCmd() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run this device's node: join the network, publish the handle, deliver chat, ring on calls",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "listen", Aliases: []string{"l"}, EnvVars: []string{"PARLEY_LISTEN"},
				Usage: "multiaddr to listen on (repeatable; default TCP and QUIC on an ephemeral port)"},
			bootstrapFlag,
			&cli.DurationFlag{Name: "bootstrap-timeout", Value: node.DefaultBootstrapTimeout, Usage: "wait this long to join before starting offline (it keeps trying)"},
			&cli.BoolFlag{Name: "media-loopback", EnvVars: []string{"PARLEY_MEDIA_LOOPBACK"},
				Usage: "offer 127.0.0.1 as a call candidate (for calls between daemons on one machine)"},
			&cli.StringSliceFlag{Name: "cloud-relay", EnvVars: []string{"PARLEY_CLOUD_RELAY"},
				Usage: "a cloud relay's libp2p multiaddr ending in /p2p/<id> (parley relay): the last-resort media path"},
			&cli.StringFlag{Name: "path", Value: "auto", EnvVars: []string{"PARLEY_PATH"}, Usage: "calls' media path: auto (direct, supernode, cloud), or tiers in the order preferred, such as supernode,cloud; one tier forces it"},
			&cli.StringFlag{Name: "profile", Value: "desktop", EnvVars: []string{"PARLEY_PROFILE"}, Usage: "desktop, or mobile (relay-only, 20 kb/s, FEC, DTX, longer keepalives)"},
			&cli.BoolFlag{Name: "auto-answer", Usage: "answer every incoming call (for unattended devices), with the audio flags below"},
			&cli.StringFlag{Name: "metrics", EnvVars: []string{"PARLEY_METRICS"}, Usage: "serve Prometheus metrics on `ADDR` (e.g. 127.0.0.1:9102); off by default"},
			uiFlag,
			&cli.BoolFlag{Name: "no-guests", EnvVars: []string{"PARLEY_NO_GUESTS"}, Usage: "refuse guests' calls (people on a supernode's /call/HANDLE page)"},
			&cli.StringFlag{Name: "web", EnvVars: []string{"PARLEY_WEB"}, Usage: "serve guest calls on TCP `ADDR` (a public daemon): http://ADDR/call/HANDLE calls HANDLE from a browser; off by default"},
			&cli.StringFlag{Name: "web-cert", EnvVars: []string{"PARLEY_WEB_CERT"}, Usage: "serve --web over HTTPS with this PEM certificate `FILE` (browsers give the microphone only to secure pages)"},
			&cli.StringFlag{Name: "web-key", EnvVars: []string{"PARLEY_WEB_KEY"}, Usage: "the PEM key `FILE` of --web-cert"},
		}, append(sourceFlags(), sinkFlags()...)...),
		Action: runDaemon,
	}
}

// runDaemon starts the node and serves its control API until a signal.
func runDaemon(c *cli.Context) error {
	log, err := logger(c, "info")
	if err != nil {
		return err
	}
	cfg, err := daemonConfig(c, log)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	st := n.Status()
	fmt.Printf("parley daemon: %s on device %s\nfingerprint %s\n", st.Handle, st.PeerID, st.Fingerprint)
	for _, a := range st.Addrs {
		fmt.Println("  listening " + a)
	}
	if !st.Online {
		fmt.Printf("offline, retrying: %s\n", st.OfflineReason)
	}
	if a := n.MetricsAddr(); a != nil {
		fmt.Printf("metrics: http://%s/metrics\n", a)
	}
	if err := serveUI(c, n); err != nil {
		return err
	}
	if web := c.String("web"); web != "" {
		g, err := n.ServeGuests(web, browser.GuestConfig{CertFile: c.String("web-cert"), KeyFile: c.String("web-key")})
		if err != nil {
			return err
		}
		defer g.Close()
		fmt.Printf("guest calls: %s/call/HANDLE\n", g.URL())
	}
	fmt.Printf("control API: %s\nready\n", filepath.Join(cfg.Home, node.SocketFile))
	errc := make(chan error, 1)
	go func() { errc <- n.ServeAPI(ctx) }()
	select {
	case <-ctx.Done():
		fmt.Println("shutting down")
		return nil
	case err := <-errc:
		return err
	}
}

// daemonConfig is the node configuration the daemon's flags ask for.
func daemonConfig(c *cli.Context, log *slog.Logger) (node.Config, error) {
	boot, err := discovery.ParseAddrs(c.StringSlice("bootstrap"))
	if err != nil {
		return node.Config{}, err
	}
	if err := checkUIFlag(c); err != nil {
		return node.Config{}, err
	}
	home := c.String("home")
	cloud, err := discovery.ParseAddrs(c.StringSlice("cloud-relay"))
	if err != nil {
		return node.Config{}, fmt.Errorf("--cloud-relay: %w", err)
	}
	cfg := node.Config{Home: home, Listen: c.StringSlice("listen"), Bootstrap: boot, CloudRelays: cloud,
		Path: c.String("path"), Profile: c.String("profile"),
		BootstrapTimeout: c.Duration("bootstrap-timeout"), MetricsAddr: c.String("metrics"), Logger: log, NoGuests: c.Bool("no-guests")}
	cfg.Media.IncludeLoopback = c.Bool("media-loopback")
	spec, err := audioSpec(c)
	if err != nil {
		return node.Config{}, err
	}
	if c.Bool("auto-answer") {
		o, err := spec.Open() // check the flags now, not at the first call
		if err != nil {
			return node.Config{}, err
		}
		o.Close()
		cfg.AutoAnswer = func(node.CallInfo) (node.CallOptions, error) { return spec.Open() }
	} else if spec != (node.AudioSpec{}) {
		return node.Config{}, errors.New("audio flags on the daemon only apply with --auto-answer")
	}
	return cfg, nil
}
