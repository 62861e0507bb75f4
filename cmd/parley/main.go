// Command parley is the one parley binary: it wires flags to the node,
// supernode and lab packages and does nothing else.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/lab"
	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/supernode"
	"github.com/parley-net/parley/supernode/mailbox"
)

func main() {
	if os.Getenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING") == "" {
		os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
	app := newApp()
	err := app.Run(permuteArgs(app, os.Args))
	if topic, ok := strings.CutPrefix(errText(err), "No help topic for "); ok {
		// 'parley help nosuch': urfave/cli's own words and exit code 3.
		err = cli.Exit(fmt.Sprintf("unknown command %s (see 'parley --help')", topic), exitUsage)
	}
	if err != nil {
		if msg := oneLine(node.ErrorText(err)); msg != "" {
			fmt.Fprintln(os.Stderr, "parley: "+msg)
		}
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func defaultHome() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "parley")
	}
	return ".parley"
}

// exitUsage is the exit code of a command line parley cannot make sense of
// (an unknown command or flag, a missing argument); 1 is every other failure.
const exitUsage = 2

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "parley",
		Usage:                "peer-to-peer voice and chat that keeps working when the cloud does not",
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "home", Value: defaultHome(), EnvVars: []string{"PARLEY_HOME"}, Usage: "directory holding keys, database and control socket"},
			&cli.StringFlag{Name: "log-level", EnvVars: []string{"PARLEY_LOG_LEVEL"},
				Usage: "debug, info, warn or error (default: info for daemon, supernode and relay; warn for the lab; error for the demo)"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"PARLEY_LOG_FORMAT"}, Usage: "text (key=value) or json (one object a line)"},
			configFlag,
		},
		Before: func(c *cli.Context) error {
			if c.IsSet("log-level") {
				if _, err := parseLevel(c.String("log-level")); err != nil {
					return err
				}
			}
			if err := checkFormat(c.String("log-format")); err != nil {
				return err
			}
			return checkCommand(c)
		},
		// main prints every error as one line and picks the exit code;
		// urfave/cli must not print or exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			supernodeCmd(), daemonCmd(), idCmd(), whoisCmd(), chatCmd(),
			groupCmd(), callCmd(), callsCmd(), answerCmd(), relayCmd(), labCmd(),
			simpleCallVerb("reject", "decline a ringing call (the only one, or by ID)"),
			simpleCallVerb("hangup", "end a call (the only one, or by ID)"),
			statusCmd(), netcheckCmd(), pingCmd(), demoCmd(),
		},
	}
	app.OnUsageError = usageError
	setUsageErrors(app.Commands)
	return app
}

// usageError turns a flag parsing error into one line and exit code 2.
func usageError(c *cli.Context, err error, _ bool) error {
	name := strings.TrimSpace("parley " + cmdPath(c))
	return cli.Exit(fmt.Sprintf("%v (see '%s --help')", err, name), exitUsage)
}

// setUsageErrors gives every command the one-line usage error, and every
// command that only groups subcommands a check for an unknown subcommand
// (urfave/cli would print "No help topic" and exit 3).
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		switch {
		case c.Before != nil:
		case len(c.Subcommands) > 0 && c.Action == nil:
			c.Before = checkCommand
		default:
			c.Before = applyConfig
		}
		setUsageErrors(c.Subcommands)
	}
}

// cmdPath is the words of the command being run ("id init"; "" for the
// app itself). urfave/cli's FullName drops the parents of a subcommand.
func cmdPath(c *cli.Context) string {
	var words []string
	for _, l := range c.Lineage() {
		if l.Command != nil && l.Command.Name != "" && l.Command.Name != c.App.Name {
			words = append([]string{l.Command.Name}, words...)
		}
	}
	return strings.Join(words, " ")
}

// checkCommand refuses an unknown command or subcommand name.
func checkCommand(c *cli.Context) error {
	first := c.Args().First()
	if first == "" || strings.HasPrefix(first, "-") {
		return nil
	}
	known, where := c.App.Command(first) != nil, "parley"
	if c.Command != nil && c.Command.Name != "" {
		known, where = c.Command.Command(first) != nil, "parley "+cmdPath(c)
	}
	if known {
		return nil
	}
	return cli.Exit(fmt.Sprintf("unknown command %q (see '%s --help')", first, where), exitUsage)
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, cli.Exit(fmt.Sprintf("--log-level %q: use debug, info, warn or error", s), exitUsage)
}

// logger is the command's logger: at --log-level, or at def when the flag
// is not given.
func logger(c *cli.Context, def string) (*slog.Logger, error) {
	lv := c.String("log-level")
	if !c.IsSet("log-level") {
		lv = def
	}
	level, err := parseLevel(lv)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.String("log-format") == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

func checkFormat(f string) error {
	if f != "text" && f != "json" {
		return cli.Exit(fmt.Sprintf("--log-format %q: use text or json", f), exitUsage)
	}
	return nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

var bootstrapFlag = &cli.StringSliceFlag{Name: "bootstrap", Aliases: []string{"b"}, EnvVars: []string{"PARLEY_BOOTSTRAP"},
	Usage: "supernode multiaddr ending in /p2p/<id> (repeatable, or comma-separated)"}

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
			&cli.DurationFlag{Name: "mailbox-replicate", Value: mailbox.DefaultReplicateInterval, EnvVars: []string{"PARLEY_MAILBOX_REPLICATE"},
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
				Mailbox: mailbox.Config{ReplicateInterval: c.Duration("mailbox-replicate")}, MaxDevices: c.Int("max-devices")})
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
			if a := sn.MetricsAddr(); a != nil {
				fmt.Printf("metrics: http://%s/metrics\n", a)
			}
			<-ctx.Done()
			fmt.Println("shutting down")
			return nil
		},
	}
}

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
		}, append(sourceFlags(), sinkFlags()...)...),
		Action: func(c *cli.Context) error {
			log, err := logger(c, "info")
			if err != nil {
				return err
			}
			boot, err := discovery.ParseAddrs(c.StringSlice("bootstrap"))
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			home := c.String("home")
			cloud, err := discovery.ParseAddrs(c.StringSlice("cloud-relay"))
			if err != nil {
				return fmt.Errorf("--cloud-relay: %w", err)
			}
			cfg := node.Config{Home: home, Listen: c.StringSlice("listen"), Bootstrap: boot, CloudRelays: cloud,
				Path: c.String("path"), Profile: c.String("profile"),
				BootstrapTimeout: c.Duration("bootstrap-timeout"), MetricsAddr: c.String("metrics"), Logger: log}
			cfg.Media.IncludeLoopback = c.Bool("media-loopback")
			spec, err := audioSpec(c)
			if err != nil {
				return err
			}
			if c.Bool("auto-answer") {
				o, err := spec.Open() // check the flags now, not at the first call
				if err != nil {
					return err
				}
				o.Close()
				cfg.AutoAnswer = func(node.CallInfo) (node.CallOptions, error) { return spec.Open() }
			} else if spec != (node.AudioSpec{}) {
				return errors.New("audio flags on the daemon only apply with --auto-answer")
			}
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
			fmt.Printf("control API: %s\nready\n", filepath.Join(home, node.SocketFile))
			errc := make(chan error, 1)
			go func() { errc <- n.ServeAPI(ctx) }()
			select {
			case <-ctx.Done():
				fmt.Println("shutting down")
				return nil
			case err := <-errc:
				return err
			}
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

func idCmd() *cli.Command {
	return &cli.Command{
		Name:  "id",
		Usage: "this device's identity",
		Subcommands: []*cli.Command{
			{
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
			},
			{
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
			},
			{
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
			},
			{
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
			},
			{
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
			},
			{
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
			},
		},
	}
}

func printIdentity(id *node.Identity) {
	fmt.Printf("handle       %s\ndevice       %s\npeer ID      %s\nfingerprint  %s\nhome         %s\n",
		id.Handle(), id.DeviceName(), id.PeerID, id.Fingerprint(), id.Home)
}

func dial(c *cli.Context) (*node.Client, error) { return node.Dial(c.String("home")) }

func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", cli.Exit(fmt.Sprintf("usage: parley %s %s", cmdPath(c), what), exitUsage)
	}
	return c.Args().First(), nil
}

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

func chatCmd() *cli.Command {
	return &cli.Command{
		Name:      "chat",
		Usage:     "chat with a handle or '#group' interactively: lines you type are sent, incoming lines printed",
		ArgsUsage: "HANDLE|#GROUP",
		Subcommands: []*cli.Command{
			{
				Name:      "send",
				Usage:     "send one message to a handle or '#group'",
				ArgsUsage: "HANDLE|#GROUP TEXT",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return cli.Exit("usage: parley chat send HANDLE|#GROUP TEXT", exitUsage)
					}
					cl, err := dial(c)
					if err != nil {
						return err
					}
					res, err := cl.Send(c.Context, c.Args().First(), strings.Join(c.Args().Tail(), " "))
					if err != nil {
						return err
					}
					printSendResult(res)
					return sendFailure(res)
				},
			},
			{
				Name:      "history",
				Usage:     "print the conversation with a handle",
				ArgsUsage: "HANDLE",
				Flags:     []cli.Flag{&cli.IntFlag{Name: "limit", Value: 0, Usage: "only the newest N messages (0: all)"}},
				Action: func(c *cli.Context) error {
					h, err := oneArg(c, "HANDLE")
					if err != nil {
						return err
					}
					cl, err := dial(c)
					if err != nil {
						return err
					}
					msgs, err := cl.History(c.Context, h, c.Int("limit"))
					if err != nil {
						return err
					}
					for _, m := range msgs {
						printMessage(m)
					}
					return nil
				},
			},
		},
		Action: func(c *cli.Context) error {
			h, err := oneArg(c, "HANDLE")
			if err != nil {
				return err
			}
			return interactiveChat(c, h)
		},
	}
}

// sendFailure is the error (and non-zero exit) of a send that reached no
// device at all or was refused by one: the message stays in this device's
// history, but someone it was for will never get it.
func sendFailure(res *node.SendResult) error {
	reached := len(res.Delivered) + len(res.Mailbox) + len(res.Queued)
	switch {
	case len(res.Refused) > 0:
		return fmt.Errorf("refused by %d device(s): %s", len(res.Refused), oneLine(res.Refused[0].Error))
	case reached == 0:
		return errors.New("sent to no device: the conversation has no device but this one")
	}
	return nil
}

func printSendResult(res *node.SendResult) {
	line := fmt.Sprintf("delivered to %d device(s)", len(res.Delivered))
	if len(res.Mailbox) > 0 {
		line += fmt.Sprintf(", left in the mailbox of %d offline device(s)", len(res.Mailbox))
	}
	if len(res.Queued) > 0 {
		line += fmt.Sprintf(", queued for %d (retrying until they or their mailboxes take it)", len(res.Queued))
	}
	if len(res.Refused) > 0 {
		line += fmt.Sprintf(", refused by %d", len(res.Refused))
	}
	fmt.Printf("%s  [%s]\n", line, res.Message.ID)
	for _, q := range append(res.Queued, res.Refused...) {
		fmt.Printf("  %s %s: %s\n", q.Handle, shortID(q.Device), oneLine(q.Error))
	}
}

func shortID(s string) string {
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}

// printMessage prints one line of history; an outgoing message shows where
// it is on each device: sent (queued), mailbox, delivered or read.
func printMessage(m node.Message) {
	state := ""
	if m.Outgoing && len(m.Devices) > 0 {
		var parts []string
		for _, d := range m.Devices {
			parts = append(parts, fmt.Sprintf("%s/%s %s", d.Handle, shortID(d.Device), d.State))
		}
		state = "  [" + strings.Join(parts, ", ") + "]"
	}
	fmt.Printf("%s  %-8s %s%s\n", time.UnixMilli(m.SentMS).Format("2006-01-02 15:04:05"), m.From+":", m.Body, state)
}

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

func interactiveChat(c *cli.Context, with string) error {
	cl, err := dial(c)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(with, "#") {
		if _, err := cl.Whois(c.Context, with); err != nil {
			return err
		}
	}
	msgs, err := cl.History(c.Context, with, 10)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		printMessage(m)
	}
	fmt.Printf("-- chatting with %s; type a line and press Enter, Ctrl-D to leave --\n", with)
	ctx, stop := signalContext()
	defer stop()
	go cl.Events(ctx, func(e node.Event) error {
		if e.Type == "message" && e.Peer == with && e.Message.From != "" {
			printMessage(*e.Message)
		}
		return nil
	})
	lines := make(chan inputLine)
	readErr := make(chan error, 1)
	go func() {
		readErr <- readLines(os.Stdin, node.MaxBodyBytes, func(l inputLine) { lines <- l })
		close(lines)
	}()
	sent, failed := 0, 0
	for {
		select {
		case <-ctx.Done():
			return chatOutcome(sent, failed, nil)
		case l, ok := <-lines:
			if !ok {
				return chatOutcome(sent, failed, <-readErr)
			}
			if l.Size > len(l.Text) {
				failed++
				fmt.Fprintf(os.Stderr, "parley: line %d not sent: %d bytes, and a message is at most %d bytes (16 KiB)\n", l.N, l.Size, node.MaxBodyBytes)
				continue
			}
			if strings.TrimSpace(l.Text) == "" {
				continue
			}
			res, err := cl.Send(ctx, with, l.Text)
			if err != nil {
				failed++
				fmt.Fprintf(os.Stderr, "parley: line %d not sent: %s\n", l.N, oneLine(err.Error()))
				continue
			}
			if err := sendFailure(res); err != nil {
				failed++
				fmt.Fprintf(os.Stderr, "parley: line %d: %s\n", l.N, err)
				continue
			}
			sent++
			if len(res.Queued) > 0 {
				fmt.Printf("  (queued for %d device(s); will retry)\n", len(res.Queued))
			}
		}
	}
}

// chatOutcome is how an interactive chat ends: an error (and a non-zero
// exit) when a line typed was not sent or stdin could not be read.
func chatOutcome(sent, failed int, readErr error) error {
	switch {
	case readErr != nil:
		return fmt.Errorf("read input: %w (%d line(s) sent, %d not sent)", readErr, sent, failed)
	case failed > 0:
		return fmt.Errorf("%d line(s) not sent (see above); %d sent", failed, sent)
	}
	return nil
}

// inputLine is one line typed: its number, its text without the line end,
// and its full size in bytes. A line longer than the reader's limit keeps
// only its first limit+1 bytes, so Size > len(Text) marks it too long.
type inputLine struct {
	N    int
	Text string
	Size int
}

// readLines calls fn for every line of r, however long: a line of more than
// max bytes is reported (Size > len(Text)) without holding all of it in
// memory, and the lines after it are read as usual. It returns r's error,
// never io.EOF.
func readLines(r io.Reader, max int, fn func(inputLine)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	keep := max + 2 // room for a line of max bytes and its "\r\n"
	var buf []byte
	size, n := 0, 0
	var prev byte // the byte before the current fragment
	for {
		frag, err := br.ReadSlice('\n')
		size += len(frag)
		if room := keep - len(buf); room > 0 {
			buf = append(buf, frag[:min(room, len(frag))]...)
		}
		if err == bufio.ErrBufferFull {
			prev = frag[len(frag)-1]
			continue
		}
		if size > 0 {
			n++
			l := inputLine{N: n, Size: size}
			if err == nil { // the line ends in "\n", or "\r\n"
				l.Size--
				if len(frag) >= 2 && frag[len(frag)-2] == '\r' || len(frag) == 1 && prev == '\r' {
					l.Size--
				}
			}
			l.Text = string(buf[:min(len(buf), l.Size, max)])
			fn(l)
		}
		buf, size, prev = buf[:0], 0, 0
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func demoCmd() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run 4 supernodes and 3 devices (alice, bob's laptop and phone) on 127.0.0.1 in this process: chat, a call that rings both of bob's devices, mail for the offline phone",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON summary instead of the transcript"},
			&cli.IntFlag{Name: "messages", Value: 10, Usage: "messages each way"},
		},
		Action: func(c *cli.Context) error {
			log, err := logger(c, "error")
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			opt := lab.DemoOptions{Messages: c.Int("messages"), Logger: log}
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
