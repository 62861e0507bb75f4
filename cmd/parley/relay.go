package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/cloudrelay"
	"github.com/parley-net/parley/internal/homelock"
	"github.com/parley-net/parley/internal/keyfile"
	"github.com/parley-net/parley/internal/turnrelay"
)

// DefaultRelayPort is the cloud relay's TURN port: 3479, so it can share a
// host with a supernode, whose STUN server has 3478.
const defaultRelayPort = 3479

func relayCmd() *cli.Command {
	return &cli.Command{
		Name:   "relay",
		Usage:  "run the cloud relay: a TURN server (UDP, TCP, TLS) with TURN REST credentials, handed to libp2p peers over /parley/turn/1.0.0",
		Flags:  relayFlags(),
		Action: runRelay,
	}
}

func relayFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen-udp", Value: fmt.Sprintf("0.0.0.0:%d", defaultRelayPort), EnvVars: []string{"PARLEY_RELAY_LISTEN_UDP"},
			Usage: "TURN over UDP on `ADDR`; empty for none"},
		&cli.StringFlag{Name: "listen-tcp", Value: fmt.Sprintf("0.0.0.0:%d", defaultRelayPort), EnvVars: []string{"PARLEY_RELAY_LISTEN_TCP"},
			Usage: "TURN over TCP on `ADDR`; empty for none"},
		&cli.StringFlag{Name: "listen-tls", EnvVars: []string{"PARLEY_RELAY_LISTEN_TLS"},
			Usage: "TURN over TLS (turns:) on `ADDR`, e.g. 0.0.0.0:5349; needs --tls-cert and --tls-key; off by default"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"PARLEY_RELAY_TLS_CERT"}, Usage: "PEM certificate `FILE` for --listen-tls"},
		&cli.StringFlag{Name: "tls-key", EnvVars: []string{"PARLEY_RELAY_TLS_KEY"}, Usage: "PEM private key `FILE` for --listen-tls"},
		&cli.StringSliceFlag{Name: "relay-ip", EnvVars: []string{"PARLEY_RELAY_IP"},
			Usage: "public `IP` of relayed ports (required; at most one IPv4 and one IPv6)"},
		&cli.StringSliceFlag{Name: "relay-bind-ip", EnvVars: []string{"PARLEY_RELAY_BIND_IP"},
			Usage: "local `IP` relayed ports bind to, one per --relay-ip in order (behind 1:1 NAT); default the relay IPs"},
		&cli.StringFlag{Name: "ports", Value: fmt.Sprintf("%d-%d", turnrelay.DefaultMinPort, turnrelay.DefaultMaxPort), EnvVars: []string{"PARLEY_RELAY_PORTS"},
			Usage: "relayed port range `MIN-MAX`"},
		&cli.StringFlag{Name: "secret", EnvVars: []string{"PARLEY_RELAY_SECRET"},
			Usage: fmt.Sprintf("TURN REST shared secret, coturn's static-auth-secret (required, at least %d bytes; prefer the environment variable, which ps does not show)", turnrelay.MinSecretLen)},
		&cli.StringFlag{Name: "realm", Value: turnrelay.DefaultRealm, EnvVars: []string{"PARLEY_RELAY_REALM"}, Usage: "STUN realm"},
		&cli.StringSliceFlag{Name: "allow-cidr", EnvVars: []string{"PARLEY_RELAY_ALLOW_CIDR"},
			Usage: "relay to peers in `CIDR` although it is private or special-purpose (repeatable; e.g. a lab's 198.51.100.0/24)"},
		&cli.StringFlag{Name: "metrics", EnvVars: []string{"PARLEY_METRICS"}, Usage: "serve Prometheus metrics on `ADDR` (e.g. 127.0.0.1:9101); off by default"},
		&cli.StringSliceFlag{Name: "libp2p-listen", EnvVars: []string{"PARLEY_RELAY_LIBP2P_LISTEN"},
			Usage: fmt.Sprintf("libp2p `MULTIADDR` for the credential protocol (repeatable; default TCP and QUIC on port %d)", cloudrelay.DefaultPort)},
		&cli.StringFlag{Name: "public-host", EnvVars: []string{"PARLEY_RELAY_PUBLIC_HOST"},
			Usage: "`HOST` named in the TURN URLs given to peers (needed for turns:); default the IP each peer reached us at"},
		&cli.DurationFlag{Name: "credential-ttl", Value: turnrelay.DefaultCredentialTTL, EnvVars: []string{"PARLEY_RELAY_CREDENTIAL_TTL"},
			Usage: "lifetime of the credentials handed out"},
		&cli.DurationFlag{Name: "max-credential-ttl", Value: turnrelay.DefaultMaxCredentialTTL, EnvVars: []string{"PARLEY_RELAY_MAX_CREDENTIAL_TTL"},
			Usage: "refuse credentials expiring further ahead than this (e.g. issued elsewhere with the same secret)"},
		&cli.IntFlag{Name: "max-allocations", EnvVars: []string{"PARLEY_RELAY_MAX_ALLOCATIONS"},
			Usage: fmt.Sprintf("live allocations in total (0: %d, -1: no limit)", turnrelay.DefaultMaxAllocations)},
		&cli.IntFlag{Name: "user-quota", EnvVars: []string{"PARLEY_RELAY_USER_QUOTA"},
			Usage: fmt.Sprintf("live allocations per credential id, i.e. per peer (0: %d, -1: no limit)", turnrelay.DefaultMaxAllocationsPerUser)},
		&cli.IntFlag{Name: "ip-quota", EnvVars: []string{"PARLEY_RELAY_IP_QUOTA"},
			Usage: fmt.Sprintf("live allocations per client IP (0: %d, -1: no limit)", turnrelay.DefaultMaxAllocationsPerIP)},
		&cli.IntFlag{Name: "max-bytes-per-second", EnvVars: []string{"PARLEY_RELAY_MAX_BYTES_PER_SECOND"},
			Usage: fmt.Sprintf("per allocation and direction (0: %d, -1: no limit)", turnrelay.DefaultMaxBytesPerSecond)},
		&cli.IntFlag{Name: "max-packets-per-second", EnvVars: []string{"PARLEY_RELAY_MAX_PACKETS_PER_SECOND"},
			Usage: fmt.Sprintf("per allocation and direction (0: %d, -1: no limit)", turnrelay.DefaultMaxPacketsPerSecond)},
	}
}

// runRelay serves the cloud relay until a signal.
func runRelay(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("parley relay takes no arguments (got %q)", c.Args().First())
	}
	log, err := logger(c, "info")
	if err != nil {
		return err
	}
	cfg, unlock, err := relayConfig(c, log)
	if err != nil {
		return err
	}
	defer unlock()
	ctx, stop := signalContext()
	defer stop()
	relay, err := cloudrelay.Start(cfg)
	if err != nil {
		return err
	}
	defer relay.Close()
	fmt.Printf("parley relay %s\ncredential addresses (give one to nodes with --cloud-relay):\n", relay.ID())
	for _, a := range relay.Addrs() {
		fmt.Println("  " + a.String())
	}
	var listeners []string
	if a := relay.TURN.UDPAddr(); a != nil {
		listeners = append(listeners, "udp "+a.String())
	}
	if a := relay.TURN.TCPAddr(); a != nil {
		listeners = append(listeners, "tcp "+a.String())
	}
	if a := relay.TURN.TLSAddr(); a != nil {
		listeners = append(listeners, "tls "+a.String())
	}
	fmt.Printf("TURN: %s; relaying on %v ports %d-%d, realm %s\n", strings.Join(listeners, ", "), cfg.TURN.RelayIPs, cfg.TURN.MinPort, cfg.TURN.MaxPort, relay.TURN.Realm())
	if a := relay.MetricsAddr(); a != nil {
		fmt.Printf("metrics: http://%s/metrics\n", a)
	}
	<-ctx.Done()
	fmt.Println("shutting down")
	return nil
}

// relayConfig is the cloud relay configuration the flags ask for, with
// the home locked for it: unlock releases the lock.
func relayConfig(c *cli.Context, log *slog.Logger) (cfg cloudrelay.Config, unlock func(), err error) {
	switch secret := c.String("secret"); {
	case secret == "":
		return cloudrelay.Config{}, nil, errors.New("--secret (or PARLEY_RELAY_SECRET) is required: the TURN REST shared secret")
	case len(secret) < turnrelay.MinSecretLen:
		return cloudrelay.Config{}, nil, fmt.Errorf("--secret is %d bytes; use at least %d (e.g. openssl rand -base64 32)", len(secret), turnrelay.MinSecretLen)
	}
	relayIPs, err := parseIPs("--relay-ip", c.StringSlice("relay-ip"))
	if err != nil {
		return cloudrelay.Config{}, nil, err
	}
	if len(relayIPs) == 0 {
		return cloudrelay.Config{}, nil, errors.New("--relay-ip is required: the public address relayed ports are reached at")
	}
	bindIPs, err := parseIPs("--relay-bind-ip", c.StringSlice("relay-bind-ip"))
	if err != nil {
		return cloudrelay.Config{}, nil, err
	}
	lo, hi, err := turnrelay.ParsePortRange(c.String("ports"))
	if err != nil {
		return cloudrelay.Config{}, nil, fmt.Errorf("--ports: %w", err)
	}
	allow, err := turnrelay.ParseCIDRs(c.StringSlice("allow-cidr"))
	if err != nil {
		return cloudrelay.Config{}, nil, fmt.Errorf("--allow-cidr: %w", err)
	}
	home := c.String("home")
	lock, err := homelock.Acquire(home, "relay.lock")
	if err != nil {
		return cloudrelay.Config{}, nil, fmt.Errorf("start relay: %w", err)
	}
	key, err := keyfile.LoadOrCreateEd25519(filepath.Join(home, "relay.key"))
	if err != nil {
		lock.Release()
		return cloudrelay.Config{}, nil, err
	}
	cfg = cloudrelay.Config{
		TURN: turnrelay.Config{
			UDPAddr: c.String("listen-udp"), TCPAddr: c.String("listen-tcp"), TLSAddr: c.String("listen-tls"),
			TLSCertFile: c.String("tls-cert"), TLSKeyFile: c.String("tls-key"),
			RelayIPs: relayIPs, RelayBindIPs: bindIPs, MinPort: lo, MaxPort: hi,
			Secret: c.String("secret"), Realm: c.String("realm"), MaxCredentialTTL: c.Duration("max-credential-ttl"),
			AllowCIDRs:     allow,
			MaxAllocations: c.Int("max-allocations"), MaxAllocationsPerUser: c.Int("user-quota"), MaxAllocationsPerIP: c.Int("ip-quota"),
			MaxBytesPerSecond: c.Int("max-bytes-per-second"), MaxPacketsPerSecond: c.Int("max-packets-per-second"),
		},
		Credentials: turnrelay.CredentialConfig{TTL: c.Duration("credential-ttl"), PublicHost: c.String("public-host")},
		Key:         key,
		Listen:      c.StringSlice("libp2p-listen"),
		MetricsAddr: c.String("metrics"),
		Logger:      log,
	}
	return cfg, func() { lock.Release() }, nil
}

func parseIPs(flag string, ss []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s %q: not an IP address", flag, s)
		}
		out = append(out, a)
	}
	return out, nil
}
