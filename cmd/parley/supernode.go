package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/supernode"
	"github.com/parley-net/parley/supernode/mailboxserver"
)

func supernodeCmd() *cli.Command {
	return &cli.Command{
		Name:  "supernode",
		Usage: "run a supernode: DHT server, circuit relay for signalling, AutoNAT",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "listen", Aliases: []string{"l"}, EnvVars: []string{"PARLEY_LISTEN"},
				Usage: fmt.Sprintf("multiaddr to listen on (repeatable; default TCP and QUIC on port %d)", supernode.DefaultPort)},
			bootstrapFlag,
			&cli.StringFlag{Name: "metrics", EnvVars: []string{"PARLEY_METRICS"}, Usage: "serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9100); off by default"},
			&cli.StringFlag{Name: "stun", Value: fmt.Sprintf("0.0.0.0:%d", supernode.DefaultSTUNPort), EnvVars: []string{"PARLEY_STUN"},
				Usage: "UDP address of the STUN server; empty for none"},
			&cli.StringFlag{Name: "turn-udp", EnvVars: []string{"PARLEY_TURN_UDP"}, Usage: "serve TURN for peers' media on this UDP `ADDR` (the supernode relay tier); off by default"},
			&cli.StringFlag{Name: "turn-tcp", EnvVars: []string{"PARLEY_TURN_TCP"}, Usage: "serve TURN over TCP on `ADDR` (for UDP-blocked peers)"},
			&cli.StringSliceFlag{Name: "turn-relay-ip", EnvVars: []string{"PARLEY_TURN_RELAY_IP"}, Usage: "public `IP` of the relayed ports (required with TURN)"},
			&cli.StringFlag{Name: "turn-ports", Value: "49152-65535", Usage: "relayed port range `MIN-MAX`"},
			&cli.StringSliceFlag{Name: "turn-allow-cidr", Usage: "relay to peers in `CIDR` although it is private or special-purpose (a lab's own ranges)"},
			&cli.IntFlag{Name: "max-devices", Value: supernode.DefaultMaxDevices, EnvVars: []string{"PARLEY_MAX_DEVICES"}, Usage: "devices held connected at once; past it connections are refused (resource manager, connection manager and file-descriptor limit follow)"},
			&cli.StringFlag{Name: "web", EnvVars: []string{"PARLEY_WEB"}, Usage: "serve guest calls on TCP `ADDR`: http://ADDR/call/HANDLE calls HANDLE from a browser; off by default"},
			&cli.StringFlag{Name: "web-cert", EnvVars: []string{"PARLEY_WEB_CERT"}, Usage: "serve --web over HTTPS with this PEM certificate `FILE` (browsers give the microphone only to secure pages)"},
			&cli.StringFlag{Name: "web-key", EnvVars: []string{"PARLEY_WEB_KEY"}, Usage: "the PEM key `FILE` of --web-cert"},
			&cli.DurationFlag{Name: "mailbox-replicate", Value: mailboxserver.DefaultReplicateInterval, EnvVars: []string{"PARLEY_MAILBOX_REPLICATE"},
				Usage: "how often mailbox holders copy their mail to the current closest supernodes (healing after a loss)"},
		},
		Action: func(c *cli.Context) error {
			log, err := logger(c, "info")
			if err != nil {
				return err
			}
			boot, err := discovery.ParseAddrs(c.StringSlice("bootstrap"))
			if err != nil {
				return err
			}
			turn, err := supernodeTURN(c)
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			sn, err := supernode.New(ctx, supernode.Config{Home: c.String("home"), Listen: c.StringSlice("listen"),
				Bootstrap: boot, MetricsAddr: c.String("metrics"), STUNAddr: c.String("stun"), TURN: turn, Logger: log,
				Mailbox: mailboxserver.Config{ReplicateInterval: c.Duration("mailbox-replicate")}, MaxDevices: c.Int("max-devices"), Web: c.String("web"),
				WebGuests: browser.GuestConfig{CertFile: c.String("web-cert"), KeyFile: c.String("web-key")}})
			if err != nil {
				return err
			}
			defer sn.Close()
			fmt.Printf("parley supernode %s\nbootstrap addresses (give one to nodes with --bootstrap):\n", sn.ID())
			for _, a := range sn.Addrs() {
				fmt.Println("  " + a.String())
			}
			if a := sn.STUNAddr(); a != nil {
				fmt.Printf("STUN: udp %s\n", a)
			}
			if t := sn.TURN(); t != nil {
				fmt.Printf("TURN: udp %v tcp %v\n", t.UDPAddr(), t.TCPAddr())
			}
			if u := sn.GuestWebURL(); u != "" {
				fmt.Printf("guest calls: %s/call/HANDLE\n", u)
			}
			if a := sn.MetricsAddr(); a != nil {
				fmt.Printf("metrics: http://%s/metrics\n", a)
			}
			<-ctx.Done()
			fmt.Println("shutting down")
			return nil
		},
	}
}

// supernodeTURN turns the --turn-* flags into a TURN configuration, or nil.
func supernodeTURN(c *cli.Context) (*turnrelay.Config, error) {
	if c.String("turn-udp") == "" && c.String("turn-tcp") == "" {
		if c.IsSet("turn-relay-ip") || c.IsSet("turn-allow-cidr") {
			return nil, errors.New("--turn-relay-ip and --turn-allow-cidr need --turn-udp or --turn-tcp")
		}
		return nil, nil
	}
	var ips []netip.Addr
	for _, s := range c.StringSlice("turn-relay-ip") {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--turn-relay-ip %q: %w", s, err)
		}
		ips = append(ips, ip)
	}
	if len(ips) == 0 {
		return nil, errors.New("TURN needs --turn-relay-ip: the public address peers reach the relayed ports at")
	}
	allow, err := turnrelay.ParseCIDRs(c.StringSlice("turn-allow-cidr"))
	if err != nil {
		return nil, err
	}
	lo, hi, err := turnrelay.ParsePortRange(c.String("turn-ports"))
	if err != nil {
		return nil, err
	}
	return &turnrelay.Config{UDPAddr: c.String("turn-udp"), TCPAddr: c.String("turn-tcp"), RelayIPs: ips,
		MinPort: lo, MaxPort: hi, AllowCIDRs: allow}, nil
}
