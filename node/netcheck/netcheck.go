// Package netcheck measures what the network a device sits on lets through,
// as parley's paths need it (like tailscale's netcheck): whether UDP gets
// out, the address each STUN server sees and whether it varies by
// destination (the NAT's mapping behaviour, RFC 4787 section 4.1), whether
// a TURN allocation succeeds over UDP, TCP and TLS at each relay tier, the
// round-trip time to each server, and whether the host has IPv6.
//
// The caller names the servers (Target): a node asks its supernodes and
// cloud relays for their STUN URLs and TURN credentials. Every TURN server
// answers STUN Binding requests too (RFC 5766 section 2.1 builds on STUN),
// so a TURN server's UDP port is one more STUN destination: with a
// supernode and a cloud relay on different addresses that makes enough to
// tell endpoint-independent from endpoint-dependent mapping.
//
// netcheck sends only STUN Binding and TURN Allocate/Refresh requests; it
// relays no data and never keeps an allocation: each is released (Refresh
// with lifetime 0) as soon as it is granted. Every probe is bounded by
// Config.Timeout. It must never import libp2p or WebRTC: the caller
// measures libp2p round trips (Target.Ping).
package netcheck

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// DefaultTimeout bounds each probe when Config.Timeout is zero.
const DefaultTimeout = 3 * time.Second

// Mapping behaviours (Report.Mapping).
const (
	// MappingIndependent: every STUN server saw the same address (no NAT,
	// or a full-cone, address-restricted or port-restricted NAT): a peer
	// can reach this device at the address a STUN server saw.
	MappingIndependent = "endpoint-independent"
	// MappingDependent: servers saw different addresses (a symmetric NAT):
	// hole punching rarely works, calls need a relay.
	MappingDependent = "endpoint-dependent"
	// MappingUnknown: fewer than two STUN destinations answered.
	MappingUnknown = "unknown"
	// MappingNoUDP: no STUN server answered over UDP.
	MappingNoUDP = "udp-blocked"
)

// ErrNoTargets is returned when there is nothing to measure.
var ErrNoTargets = errors.New("netcheck: no supernode or relay to measure against")

// Target is one server: a supernode or a cloud relay.
type Target struct {
	// Tier is what the server is to parley: "supernode" or "cloud".
	Tier string
	// Name identifies it to a person (a short peer ID).
	Name string
	// STUN are stun:HOST:PORT URLs; the UDP TURN URLs of TURN are asked
	// for a binding as well.
	STUN []string
	// TURN are turn:/turns: URLs with the Username and Password that
	// allocate on them; nil means the server offers no TURN (or refused
	// credentials: TURNError says why).
	TURN               []string
	Username, Password string
	TURNError          string
	// Ping, if set, measures a round trip to the server over libp2p (what
	// works when UDP does not); nil means none.
	Ping func(context.Context) (time.Duration, error)
}

// Config configures Run.
type Config struct {
	// Targets are the servers to measure against; at least one.
	Targets []Target
	// Timeout bounds each probe; 0 means DefaultTimeout.
	Timeout time.Duration
	// TLSConfig verifies turns: servers; nil means the system roots with
	// the URL's host as the server name.
	TLSConfig *tls.Config
	// Logger receives debug logs; nil means slog.Default().
	Logger *slog.Logger
}

// Report is what Run found.
type Report struct {
	// UDP is whether any STUN server answered over UDP.
	UDP bool `json:"udp"`
	// Mapping is one of the Mapping* constants.
	Mapping string `json:"mapping"`
	// MappedAddr is the address the STUN servers saw (the first one that
	// answered); Public is whether it is this host's own address (no NAT).
	MappedAddr string `json:"mapped_addr,omitempty"`
	Public     bool   `json:"public"`
	// IPv6 is whether the host has a global IPv6 address (not a unique
	// local one, fc00::/7) with a route out.
	IPv6     bool   `json:"ipv6"`
	IPv6Addr string `json:"ipv6_addr,omitempty"`
	// STUN has one entry per STUN destination, all asked from one socket.
	STUN []STUNResult `json:"stun"`
	// TURN has one entry per TURN URL of every target.
	TURN []TURNResult `json:"turn"`
	// Ping has one entry per target with a Ping function.
	Ping []PingResult `json:"ping,omitempty"`
	// TookMS is how long the check took.
	TookMS float64 `json:"took_ms"`
}

// STUNResult is one STUN Binding exchange.
type STUNResult struct {
	Tier   string  `json:"tier"`
	Name   string  `json:"name"`
	Server string  `json:"server"`           // HOST:PORT
	Mapped string  `json:"mapped,omitempty"` // the address the server saw
	RTTMS  float64 `json:"rtt_ms,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// TURNResult is one TURN allocation attempt.
type TURNResult struct {
	Tier      string  `json:"tier"`
	Name      string  `json:"name"`
	URL       string  `json:"url"`
	Transport string  `json:"transport"` // "udp", "tcp" or "tls"
	OK        bool    `json:"ok"`
	Relayed   string  `json:"relayed,omitempty"` // the relayed address granted
	MS        float64 `json:"ms,omitempty"`      // connect and allocate
	Error     string  `json:"error,omitempty"`
}

// PingResult is a round trip to a target over the caller's transport.
type PingResult struct {
	Tier  string  `json:"tier"`
	Name  string  `json:"name"`
	RTTMS float64 `json:"rtt_ms,omitempty"`
	Error string  `json:"error,omitempty"`
}

// TURNReachable reports whether an allocation succeeded at tier over
// transport ("udp", "tcp" or "tls"; "" for any).
func (r *Report) TURNReachable(tier, transport string) bool {
	for _, t := range r.TURN {
		if t.OK && (tier == "" || t.Tier == tier) && (transport == "" || t.Transport == transport) {
			return true
		}
	}
	return false
}

// Run measures the network against cfg.Targets.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if len(cfg.Targets) == 0 {
		return nil, ErrNoTargets
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	start := time.Now()
	r := &Report{}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); r.STUN = probeSTUN(ctx, cfg) }()
	go func() { defer wg.Done(); r.TURN = probeTURN(ctx, cfg) }()
	go func() { defer wg.Done(); r.Ping = probePing(ctx, cfg) }()
	r.IPv6, r.IPv6Addr = ipv6()
	wg.Wait()
	r.classify()
	r.TookMS = ms(time.Since(start))
	return r, nil
}

// classify derives UDP, Mapping, MappedAddr and Public from the STUN
// results.
func (r *Report) classify() {
	var mapped []string
	for _, s := range r.STUN {
		if s.Mapped != "" {
			mapped = append(mapped, s.Mapped)
		}
	}
	switch {
	case len(mapped) == 0:
		r.Mapping = MappingNoUDP
		return
	case len(mapped) == 1:
		r.Mapping = MappingUnknown
	case len(slices.Compact(slices.Sorted(slices.Values(mapped)))) == 1:
		r.Mapping = MappingIndependent
	default:
		r.Mapping = MappingDependent
	}
	r.UDP, r.MappedAddr = true, mapped[0]
	if ap, err := net.ResolveUDPAddr("udp", mapped[0]); err == nil {
		r.Public = isLocalIP(ap.IP)
	}
	if r.Public && r.Mapping == MappingUnknown {
		r.Mapping = MappingIndependent // no NAT maps anything: one server is enough to tell
	}
}

// stunDest is one distinct STUN destination.
type stunDest struct {
	tier, name, hostport string
}

func stunDests(ts []Target) []stunDest {
	var out []stunDest
	seen := map[string]bool{}
	for _, t := range ts {
		var hps []string
		for _, u := range t.STUN {
			if p, err := ParseURL(u); err == nil && p.Scheme == "stun" {
				hps = append(hps, p.HostPort)
			}
		}
		for _, u := range t.TURN {
			if p, err := ParseURL(u); err == nil && p.Scheme == "turn" && p.Transport == "udp" {
				hps = append(hps, p.HostPort)
			}
		}
		for _, hp := range hps {
			if !seen[hp] {
				seen[hp] = true
				out = append(out, stunDest{t.Tier, t.Name, hp})
			}
		}
	}
	return out
}

// probeSTUN asks every STUN destination for a binding from one UDP socket,
// so that the answers compare: the same socket, different destinations.
func probeSTUN(ctx context.Context, cfg Config) []STUNResult {
	dests := stunDests(cfg.Targets)
	out := make([]STUNResult, len(dests))
	for i, d := range dests {
		out[i] = STUNResult{Tier: d.tier, Name: d.name, Server: d.hostport}
	}
	if len(dests) == 0 {
		return out
	}
	conn, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		for i := range out {
			out[i].Error = fmt.Sprintf("open UDP socket: %v", err)
		}
		return out
	}
	c, err := turn.NewClient(&turn.ClientConfig{Conn: conn, RTO: 250 * time.Millisecond, LoggerFactory: quietLogs()})
	if err != nil {
		conn.Close()
		for i := range out {
			out[i].Error = err.Error()
		}
		return out
	}
	if err := c.Listen(); err != nil {
		c.Close()
		conn.Close()
		for i := range out {
			out[i].Error = err.Error()
		}
		return out
	}
	var wg sync.WaitGroup
	for i, d := range dests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr, err := net.ResolveUDPAddr("udp4", d.hostport)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			t0 := time.Now()
			mapped, err := c.SendBindingRequestTo(addr)
			if err != nil {
				out[i].Error = "no answer: " + err.Error()
				return
			}
			out[i].Mapped, out[i].RTTMS = mapped.String(), ms(time.Since(t0))
		}()
	}
	// A binding request retransmits for several seconds (RFC 8489 section
	// 6.2.1); closing the client ends the ones that got no answer in time.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(cfg.Timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
	c.Close()
	conn.Close()
	<-done
	for i := range out {
		if out[i].Mapped == "" && strings.Contains(out[i].Error, "closed") {
			out[i].Error = fmt.Sprintf("no answer within %v", cfg.Timeout)
		}
	}
	return out
}

func probeTURN(ctx context.Context, cfg Config) []TURNResult {
	var out []TURNResult
	type job struct {
		i int
		u URL
		t Target
	}
	var jobs []job
	for _, t := range cfg.Targets {
		if t.TURNError != "" {
			out = append(out, TURNResult{Tier: t.Tier, Name: t.Name, Error: t.TURNError})
			continue
		}
		for _, raw := range t.TURN {
			u, err := ParseURL(raw)
			if err != nil || u.Scheme == "stun" {
				continue
			}
			out = append(out, TURNResult{Tier: t.Tier, Name: t.Name, URL: raw, Transport: u.transport()})
			jobs = append(jobs, job{len(out) - 1, u, t})
		}
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			relayed, err := allocate(ctx, cfg, j.u, j.t.Username, j.t.Password)
			r := &out[j.i]
			if err != nil {
				r.Error = err.Error()
				return
			}
			r.OK, r.Relayed, r.MS = true, relayed, ms(time.Since(t0))
		}()
	}
	wg.Wait()
	return out
}

// allocate makes one TURN allocation at u and releases it.
func allocate(ctx context.Context, cfg Config, u URL, user, pass string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var conn net.PacketConn
	switch u.transport() {
	case "udp":
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			return "", err
		}
		conn = c
	case "tcp", "tls":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", u.HostPort)
		if err != nil {
			return "", fmt.Errorf("connect: %w", err)
		}
		if u.Scheme == "turns" {
			tc := cfg.TLSConfig.Clone()
			if tc == nil {
				tc = &tls.Config{}
			}
			if tc.ServerName == "" {
				tc.ServerName = u.Host
			}
			tlsConn := tls.Client(c, tc)
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				c.Close()
				return "", fmt.Errorf("TLS: %w", err)
			}
			c = tlsConn
		}
		conn = turn.NewSTUNConn(c)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: u.HostPort, TURNServerAddr: u.HostPort, Username: user, Password: pass,
		Conn: conn, RTO: 250 * time.Millisecond, LoggerFactory: quietLogs(),
	})
	if err != nil {
		conn.Close()
		return "", err
	}
	type result struct {
		addr string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		if err := client.Listen(); err != nil {
			res <- result{err: err}
			return
		}
		relay, err := client.Allocate()
		if err != nil {
			res <- result{err: err}
			return
		}
		addr := relay.LocalAddr().String()
		relay.Close() // Refresh with lifetime 0: the allocation is released
		res <- result{addr: addr}
	}()
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		r.err = fmt.Errorf("no allocation within %v", cfg.Timeout)
	}
	client.Close()
	conn.Close()
	if r.err != nil && !strings.HasPrefix(r.err.Error(), "no allocation") {
		r.err = fmt.Errorf("allocate: %w", r.err)
	}
	return r.addr, r.err
}

func probePing(ctx context.Context, cfg Config) []PingResult {
	var out []PingResult
	for _, t := range cfg.Targets {
		if t.Ping != nil {
			out = append(out, PingResult{Tier: t.Tier, Name: t.Name})
		}
	}
	var wg sync.WaitGroup
	i := 0
	for _, t := range cfg.Targets {
		if t.Ping == nil {
			continue
		}
		r := &out[i]
		i++
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			d, err := t.Ping(pctx)
			if err != nil {
				r.Error = err.Error()
				return
			}
			r.RTTMS = ms(d)
		}()
	}
	wg.Wait()
	return out
}

// ipv6 reports whether the host has a route out over IPv6 from a global
// address. A UDP "connect" sends nothing: it only asks the kernel for a
// route and a source address.
func ipv6() (bool, string) {
	c, err := net.Dial("udp6", "[2001:4860:4860::8888]:3478")
	if err != nil {
		return false, ""
	}
	defer c.Close()
	a, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || !a.IP.IsGlobalUnicast() || a.IP.IsPrivate() || a.IP.To4() != nil {
		return false, ""
	}
	return true, a.IP.String()
}

func isLocalIP(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// URL is a parsed stun:, turn: or turns: URL (RFC 7064, RFC 7065).
type URL struct {
	Scheme    string // "stun", "turn" or "turns"
	Host      string
	HostPort  string
	Transport string // "udp" or "tcp" (turn: without one is udp; turns: is tcp)
}

func (u URL) transport() string {
	if u.Scheme == "turns" {
		return "tls"
	}
	return u.Transport
}

// ParseURL parses a stun:, turn: or turns: URL with a port.
func ParseURL(s string) (URL, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || (scheme != "stun" && scheme != "turn" && scheme != "turns") {
		return URL{}, fmt.Errorf("URL %q: not stun:, turn: or turns:", s)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	pu, err := url.Parse("x://" + hostport)
	if err != nil || pu.Port() == "" {
		return URL{}, fmt.Errorf("URL %q: no HOST:PORT", s)
	}
	u := URL{Scheme: scheme, Host: pu.Hostname(), HostPort: pu.Host, Transport: "udp"}
	if scheme == "turns" {
		u.Transport = "tcp"
	}
	switch query {
	case "", "transport=udp":
	case "transport=tcp":
		u.Transport = "tcp"
	default:
		return URL{}, fmt.Errorf("URL %q: unknown query %q", s, query)
	}
	return u, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quietLogs keeps pion's logs (a retransmission is a warning to it, and
// an unanswered probe is an answer to us) out of the output.
func quietLogs() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}

// WriteText writes the report as a person reads it.
func (r *Report) WriteText(w io.Writer) error {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "UDP\t%s\n", yes(r.UDP))
	nat := r.Mapping
	switch {
	case r.UDP && r.Public:
		nat += " (no NAT: the servers see this host's own address)"
	case r.Mapping == MappingIndependent:
		nat += " (a peer can reach the mapped address: direct calls likely)"
	case r.Mapping == MappingDependent:
		nat += " (symmetric NAT: calls will mostly need a relay)"
	case r.Mapping == MappingUnknown:
		nat += " (one STUN destination answered; a second one, such as a cloud relay, tells)"
	}
	fmt.Fprintf(tw, "mapping\t%s\n", nat)
	if r.MappedAddr != "" {
		fmt.Fprintf(tw, "mapped address\t%s\n", r.MappedAddr)
	}
	v6 := yes(r.IPv6)
	if r.IPv6Addr != "" {
		v6 += " (" + r.IPv6Addr + ")"
	}
	fmt.Fprintf(tw, "IPv6\t%s\n", v6)
	tw.Flush()

	fmt.Fprintln(w, "\nSTUN")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  tier\tserver\tmapped\trtt")
	for _, s := range r.STUN {
		if s.Error != "" {
			fmt.Fprintf(tw, "  %s %s\t%s\t-\t%s\n", s.Tier, s.Name, s.Server, s.Error)
		} else {
			fmt.Fprintf(tw, "  %s %s\t%s\t%s\t%.1f ms\n", s.Tier, s.Name, s.Server, s.Mapped, s.RTTMS)
		}
	}
	tw.Flush()

	fmt.Fprintln(w, "\nTURN")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  tier\ttransport\turl\tresult")
	for _, t := range r.TURN {
		switch {
		case t.OK:
			fmt.Fprintf(tw, "  %s %s\t%s\t%s\tallocated %s in %.1f ms\n", t.Tier, t.Name, t.Transport, t.URL, t.Relayed, t.MS)
		case t.URL == "":
			fmt.Fprintf(tw, "  %s %s\t-\t-\t%s\n", t.Tier, t.Name, t.Error)
		default:
			fmt.Fprintf(tw, "  %s %s\t%s\t%s\tfailed: %s\n", t.Tier, t.Name, t.Transport, t.URL, t.Error)
		}
	}
	tw.Flush()

	if len(r.Ping) > 0 {
		fmt.Fprintln(w, "\nlibp2p round trip")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, p := range r.Ping {
			if p.Error != "" {
				fmt.Fprintf(tw, "  %s %s\t%s\n", p.Tier, p.Name, p.Error)
			} else {
				fmt.Fprintf(tw, "  %s %s\t%.1f ms\n", p.Tier, p.Name, p.RTTMS)
			}
		}
		tw.Flush()
	}
	_, err := fmt.Fprintf(w, "\ntook %.0f ms\n", r.TookMS)
	return err
}
