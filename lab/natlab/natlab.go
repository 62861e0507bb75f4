package natlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parley-net/parley/lab/netlab"
)

// Bounds on the lab's waits. Each is far above what a healthy run takes
// on a two-core machine; hitting one means something is broken.
const (
	serverReadyTimeout = 30 * time.Second // supernode and relay print their addresses
	daemonReadyTimeout = 60 * time.Second // a daemon joins and prints "ready"
	callSlack          = 45 * time.Second // a call's setup, hangup and exit, beyond its audio
	recordingTimeout   = 10 * time.Second // the callee's WAV is closed after the hangup
	commandTimeout     = 20 * time.Second // short CLI commands (id init)
	teardownTimeout    = 30 * time.Second // everything stopped and deleted
)

// DefaultAudio is how long each call sends audio when Options.Audio is 0.
const DefaultAudio = 4 * time.Second

// Lab addressing: only the RFC 5737 ranges netlab uses, which the TURN
// relays must be told they may relay to (they refuse special-purpose
// addresses otherwise).
var labCIDRs = []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"}

// Ports of the servers. A udp-blocked client reaches only TCP 80 and 443,
// so each server's libp2p TCP listener takes 443 and its TURN-over-TCP
// listener takes 80; the supernode and the cloud relay live on two hosts
// so these do not clash.
const (
	libp2pTCPPort = 443
	turnTCPPort   = 80
	quicPort      = 4100
	stunPort      = 3478
	turnUDPPort   = 3479
)

// Options configures Start and RunMatrix. The zero value runs every NAT
// type with the running executable as the parley binary.
type Options struct {
	// Binary is the parley binary run inside the namespaces. Empty means
	// this process's own executable (os.Executable), which is right for
	// `parley lab nat` and wrong for a test binary.
	Binary string
	// Types are the NAT types in the lab. Each gets two client hosts
	// behind routers of their own: <type>-a, which places calls, and
	// <type>-b, which answers them, so same-type pairs use two NATs. Nil
	// means netlab.NATTypes(). A repeated or unknown type is an error.
	Types []netlab.NATType
	// Pairs are the calls RunMatrix makes, in order; nil means AllPairs
	// of Types. Every type named must be in Types. Start ignores it.
	Pairs []CallSpec
	// Audio is how long each call of RunMatrix sends the speech-like
	// signal once connected; 0 means DefaultAudio.
	Audio time.Duration
	// DirectAfter is CallSpec.DirectAfter for every call of RunMatrix that
	// sets none.
	DirectAfter time.Duration
	// Fault, when not empty, makes RunMatrix end with Lab.Fault: "cloud"
	// kills the cloud relay, "supernode" the supernode, "caller" the
	// caller's daemon, in the middle of the calls of FaultCalls. Anything
	// else is an error, and so is a fault for which Types hold none of
	// the calls that show it (FaultCalls).
	Fault string
	// LossPct, when not 0, makes the NAT router of every caller (each
	// type's -a host; the host itself for Public) drop that percentage of
	// the UDP datagrams it forwards, both ways, at random
	// (netlab.Lab.SetLoss), so every call runs over a lossy path. It must
	// be in [0, 100); 0 means no loss.
	LossPct int
	// Dir holds the devices' homes, the recordings and every process's
	// stdout (NAME.out) and stderr (NAME.log). Empty means a new temporary
	// directory that Close removes; a directory given here is kept.
	Dir string
	// Prefix is netlab's prefix for the lab's namespaces; empty means a
	// new random one.
	Prefix string
	// Progress receives one human-readable line per step (lab built,
	// processes ready, each call); nil discards them.
	Progress io.Writer
	// Logger receives netlab's records; nil discards them.
	Logger *slog.Logger
}

// CallSpec names one call: from the <Caller>-a host to the <Callee>-b host.
type CallSpec struct {
	Caller, Callee netlab.NATType
	// Path forces the call's tier ("direct", "supernode" or "cloud", as
	// `parley call --path`); empty means auto.
	Path string
	// Profile is the caller's profile ("desktop" or "mobile", as `parley
	// call --profile`); empty means the default (desktop).
	Profile string
	// Audio is how long the call sends audio once connected; 0 means
	// DefaultAudio.
	Audio time.Duration
	// DirectAfter, when not 0, drops UDP between the two devices' public
	// addresses from before the call until this long after it was placed:
	// the call must start on a relay and move to a direct pair once one
	// works, and Pair.SwitchGapMS tells what the move cost in audio.
	DirectAfter time.Duration
}

func (s CallSpec) String() string {
	out := fmt.Sprintf("%s → %s", s.Caller, s.Callee)
	if s.Path != "" {
		out += " --path " + s.Path
	}
	if s.Profile != "" {
		out += " --profile " + s.Profile
	}
	if s.DirectAfter != 0 {
		out += " --direct-after " + s.DirectAfter.String()
	}
	return out
}

// AllPairs returns every ordered pair of types, same-type pairs included:
// the full matrix, callers in the outer loop.
func AllPairs(types []netlab.NATType) []CallSpec {
	var out []CallSpec
	for _, a := range types {
		for _, b := range types {
			out = append(out, CallSpec{Caller: a, Callee: b})
		}
	}
	return out
}

// SameTypePairs returns each type calling its own type: the matrix's
// diagonal, a quick check of the hardest case for each NAT.
func SameTypePairs(types []netlab.NATType) []CallSpec {
	var out []CallSpec
	for _, a := range types {
		out = append(out, CallSpec{Caller: a, Callee: a})
	}
	return out
}

// ParseTypes parses a comma-separated list of NAT type names; empty means
// every type.
func ParseTypes(s string) ([]netlab.NATType, error) {
	if strings.TrimSpace(s) == "" {
		return netlab.NATTypes(), nil
	}
	var out []netlab.NATType
	for _, f := range strings.Split(s, ",") {
		t, err := netlab.ParseNATType(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Fault names accepted by Options.Fault and Lab.Fault: the process
// SIGKILLed mid-call.
const (
	FaultCloud     = "cloud"     // the cloud relay
	FaultSupernode = "supernode" // the supernode
	FaultCaller    = "caller"    // the caller's daemon
)

// Lab is a running NAT lab with parley in it: a supernode (with STUN and
// TURN) and a cloud relay on public hosts, and a daemon on every client
// host. Its methods must not be called concurrently. Close tears it down.
type Lab struct {
	opts    Options
	binary  string
	dir     string
	tempDir bool
	net     *netlab.Lab

	supernode, relay *proc
	bootstrap        []string // the supernode's multiaddrs
	cloudRelay       string   // the cloud relay's libp2p TCP multiaddr
	devices          map[netlab.NATType][2]*device
	// spares are further devices of a type, <type>-c onwards, added when
	// a fault runs more calls at once than -a and -b can take
	// (Lab.sparesOf).
	spares map[netlab.NATType][]*device

	closeOnce sync.Once
	closeErr  error
}

// device is one client host with its daemon.
type device struct {
	host   *netlab.Host
	handle string
	home   string
	heard  string // the WAV file the daemon records incoming calls to
	daemon *proc
}

// Start builds the lab and starts its processes: SweepStale removes
// crashed runs' leftovers first; on any error, and when ctx is cancelled
// during setup, everything made so far is torn down.
func Start(ctx context.Context, opts Options) (l *Lab, err error) {
	if err := netlab.Available(); err != nil {
		return nil, err
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	l = &Lab{opts: opts, devices: map[netlab.NATType][2]*device{}, spares: map[netlab.NATType][]*device{}}
	if l.binary, err = binaryPath(opts.Binary); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if l.dir = opts.Dir; l.dir == "" {
		if l.dir, err = os.MkdirTemp("", "parley-natlab-"); err != nil {
			return l, err
		}
		l.tempDir = true
	} else if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return l, err
	}
	if err := netlab.SweepStale("pl"); err != nil {
		return l, fmt.Errorf("sweep stale labs: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if l.net, err = netlab.New(ctx, netlab.Options{Prefix: opts.Prefix, Logger: log}); err != nil {
		return l, err
	}
	if err := l.build(ctx); err != nil {
		return l, err
	}
	l.progress("lab %s built in %s: %d NAT types, 2 hosts each", l.net.Prefix(), l.dir, len(opts.Types))
	if err := l.startServers(ctx); err != nil {
		return l, err
	}
	if err := l.startDaemons(ctx); err != nil {
		return l, err
	}
	return l, ctx.Err()
}

func (o *Options) check() error {
	if o.Types == nil {
		o.Types = netlab.NATTypes()
	}
	if len(o.Types) == 0 {
		return errors.New("natlab: no NAT types")
	}
	seen := map[netlab.NATType]bool{}
	for _, t := range o.Types {
		if _, err := netlab.ParseNATType(string(t)); err != nil {
			return fmt.Errorf("natlab: %w", err)
		}
		if seen[t] {
			return fmt.Errorf("natlab: NAT type %s given twice", t)
		}
		seen[t] = true
	}
	if o.LossPct < 0 || o.LossPct >= 100 {
		return fmt.Errorf("natlab: loss %d%% outside [0, 100)", o.LossPct)
	}
	if o.Audio < 0 {
		return fmt.Errorf("natlab: negative audio duration %s", o.Audio)
	}
	for _, p := range o.Pairs {
		if p.Caller == "" && p.Callee == "" {
			continue
		}
		if !seen[p.Caller] || !seen[p.Callee] {
			return fmt.Errorf("natlab: call %s: both types must be among %v", p, o.Types)
		}
	}
	switch o.Fault {
	case "":
	case FaultCloud, FaultSupernode, FaultCaller:
		if !slices.ContainsFunc(FaultCalls(o.Types, o.Fault), func(f FaultSpec) bool { return f.Expect != ExpectUnaffected }) {
			return fmt.Errorf("natlab: --fault %s needs %s in the lab's types", o.Fault, faultNeeds[o.Fault])
		}
	default:
		return fmt.Errorf("natlab: unknown fault %q (want %q, %q or %q)", o.Fault, FaultCloud, FaultSupernode, FaultCaller)
	}
	return nil
}

func binaryPath(p string) (string, error) {
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("natlab: find the parley binary: %w", err)
		}
		p = exe
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("natlab: parley binary: %w", err)
	} else if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("natlab: parley binary %s is not an executable file", abs)
	}
	return abs, nil
}

func (l *Lab) progress(format string, args ...any) {
	if l.opts.Progress != nil {
		fmt.Fprintf(l.opts.Progress, format+"\n", args...)
	}
}

// build adds the hosts: the servers first, so they get 203.0.113.10
// (supernode) and .11 (cloud relay).
func (l *Lab) build(ctx context.Context) error {
	for _, t := range l.opts.Types {
		var pair [2]*device
		for i, suffix := range []string{"a", "b"} {
			name := string(t) + "-" + suffix
			h, err := l.net.AddNATHost(ctx, name, t)
			if err != nil {
				return err
			}
			if i == 0 && l.opts.LossPct > 0 {
				if err := l.net.SetLoss(ctx, h, l.opts.LossPct); err != nil {
					return err
				}
			}
			home := filepath.Join(l.dir, name)
			pair[i] = &device{host: h, handle: name, home: home, heard: filepath.Join(home, "heard.wav")}
		}
		l.devices[t] = pair
	}
	return nil
}

// startServers starts the supernode and the cloud relay, each on a public
// host of its own, and reads their multiaddrs.
func (l *Lab) startServers(ctx context.Context) error {
	snHost, err := l.net.AddPublicHost(ctx, "sn")
	if err != nil {
		return err
	}
	cloudHost, err := l.net.AddPublicHost(ctx, "cloud")
	if err != nil {
		return err
	}
	sn, cloud := snHost.IP.String(), cloudHost.IP.String()
	snArgs := []string{"--home", filepath.Join(l.dir, "sn"), "--log-level", l.logLevel(), "supernode",
		"--listen", fmt.Sprintf("/ip4/%s/tcp/%d", sn, libp2pTCPPort),
		"--listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", sn, quicPort),
		"--stun", fmt.Sprintf("%s:%d", sn, stunPort),
		"--turn-udp", fmt.Sprintf("%s:%d", sn, turnUDPPort),
		"--turn-tcp", fmt.Sprintf("%s:%d", sn, turnTCPPort),
		"--turn-relay-ip", sn}
	for _, c := range labCIDRs {
		snArgs = append(snArgs, "--turn-allow-cidr", c)
	}
	relayArgs := []string{"--home", filepath.Join(l.dir, "cloud"), "--log-level", l.logLevel(), "relay",
		"--relay-ip", cloud, "--secret", randomSecret(),
		"--listen-udp", fmt.Sprintf("%s:%d", cloud, turnUDPPort),
		"--listen-tcp", fmt.Sprintf("%s:%d", cloud, turnTCPPort),
		"--libp2p-listen", fmt.Sprintf("/ip4/%s/tcp/%d", cloud, libp2pTCPPort),
		"--libp2p-listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", cloud, quicPort)}
	for _, c := range labCIDRs {
		relayArgs = append(relayArgs, "--allow-cidr", c)
	}
	for _, d := range []string{"sn", "cloud"} {
		if err := os.MkdirAll(filepath.Join(l.dir, d), 0o700); err != nil {
			return err
		}
	}
	if l.supernode, err = startProc(snHost.Command(context.Background(), l.binary, snArgs...), l.dir, "supernode"); err != nil {
		return err
	}
	if l.relay, err = startProc(cloudHost.Command(context.Background(), l.binary, relayArgs...), l.dir, "cloud-relay"); err != nil {
		return err
	}
	if l.bootstrap, err = multiaddrs(ctx, l.supernode); err != nil {
		return err
	}
	cloudAddrs, err := multiaddrs(ctx, l.relay)
	if err != nil {
		return err
	}
	// The TCP address: the one every client, udp-blocked too, can reach.
	l.cloudRelay = cloudAddrs[0]
	for _, a := range cloudAddrs {
		if strings.Contains(a, "/tcp/") {
			l.cloudRelay = a
			break
		}
	}
	l.progress("supernode %s: %s", sn, strings.Join(l.bootstrap, " "))
	l.progress("cloud relay %s: %s", cloud, l.cloudRelay)
	return nil
}

// multiaddrs waits for p to print its multiaddrs (lines holding /p2p/,
// printed together) and returns them.
func multiaddrs(ctx context.Context, p *proc) ([]string, error) {
	isAddr := func(s string) bool { return strings.Contains(s, "/p2p/") }
	first, _, err := p.waitLine(ctx, serverReadyTimeout, "a multiaddr with /p2p/", isAddr)
	if err != nil {
		return nil, err
	}
	// The rest follow at once; the first other line ends the list.
	_, _, _ = p.waitLine(ctx, time.Second, "the end of its addresses", func(s string) bool { return !isAddr(s) })
	lines, _ := p.snapshot()
	var out []string
	for _, s := range lines[first:] {
		if !isAddr(s) {
			break
		}
		out = append(out, strings.TrimSpace(s))
	}
	return out, nil
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startDaemons creates each device's identity and starts its daemon,
// answering every call with the speech-like signal and recording what it
// hears, then waits until all are ready.
func (l *Lab) startDaemons(ctx context.Context) error {
	var all []*device
	for _, t := range l.opts.Types {
		all = append(all, l.devices[t][0], l.devices[t][1])
	}
	for _, d := range all {
		if err := l.initDevice(ctx, d); err != nil {
			return err
		}
	}
	for _, d := range all {
		if err := l.startDaemon(d, "daemon-"+d.handle); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := waitReady(ctx, all); err != nil {
		return err
	}
	l.progress("%d daemons ready in %.1f s", len(all), time.Since(start).Seconds())
	return nil
}

// initDevice makes the device's home and identity.
func (l *Lab) initDevice(ctx context.Context, d *device) error {
	if err := os.MkdirAll(d.home, 0o700); err != nil {
		return err
	}
	if out, err := l.cli(ctx, commandTimeout, "--home", d.home, "id", "init", "--handle", d.handle); err != nil {
		return fmt.Errorf("id init %s: %w: %s", d.handle, err, out)
	}
	return nil
}

// startDaemon starts the device's daemon in its host's namespace, its
// output in the files named name (a restarted daemon gets a new name, so
// the first one's logs stay).
func (l *Lab) startDaemon(d *device, name string) error {
	args := []string{"--home", d.home, "--log-level", l.logLevel(), "daemon",
		"--listen", "/ip4/0.0.0.0/tcp/0", "--listen", "/ip4/0.0.0.0/udp/0/quic-v1"}
	for _, b := range l.bootstrap {
		args = append(args, "--bootstrap", b)
	}
	args = append(args, "--cloud-relay", l.cloudRelay, "--auto-answer", "--speech", "--out", d.heard)
	p, err := startProc(d.host.Command(context.Background(), l.binary, args...), l.dir, name)
	if err != nil {
		return err
	}
	d.daemon = p
	return nil
}

// waitReady waits until every device's daemon has printed "ready".
func waitReady(ctx context.Context, ds []*device) error {
	return Parallel(ds, 0, func(d *device) error {
		_, _, err := d.daemon.waitLine(ctx, daemonReadyTimeout, `"ready"`, func(s string) bool { return strings.TrimSpace(s) == "ready" })
		if err != nil {
			return fmt.Errorf("daemon %s (%s): %w\n%s", d.handle, d.host, err, d.daemon.tail(20))
		}
		return nil
	})
}

// sparesOf returns n spare devices of type t (see Lab.spares), adding the
// missing ones: each behind a router of its own, its daemon started and
// ready.
func (l *Lab) sparesOf(ctx context.Context, t netlab.NATType, n int) ([]*device, error) {
	var added []*device
	for i := len(l.spares[t]); i < n; i++ {
		name := fmt.Sprintf("%s-%c", t, 'c'+i)
		h, err := l.net.AddNATHost(ctx, name, t)
		if err != nil {
			return nil, err
		}
		home := filepath.Join(l.dir, name)
		d := &device{host: h, handle: name, home: home, heard: filepath.Join(home, "heard.wav")}
		l.spares[t] = append(l.spares[t], d)
		if err := l.initDevice(ctx, d); err != nil {
			return nil, err
		}
		if err := l.startDaemon(d, "daemon-"+d.handle); err != nil {
			return nil, err
		}
		added = append(added, d)
	}
	if len(added) > 0 {
		start := time.Now()
		if err := waitReady(ctx, added); err != nil {
			return nil, err
		}
		l.progress("%d spare %s daemon(s) ready in %.1f s", len(added), t, time.Since(start).Seconds())
	}
	return l.spares[t][:n], nil
}

// cli runs a short parley command in the default namespace (the control
// socket is a file, reachable from any namespace) and returns its
// combined output.
func (l *Lab) cli(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.binary, args...)
	cmd.WaitDelay = time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := spawn(cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return strings.TrimSpace(out.String()), err
}

// allDevices returns every device of the lab, spares included.
func (l *Lab) allDevices() []*device {
	var out []*device
	for _, pair := range l.devices {
		for _, d := range pair {
			if d != nil {
				out = append(out, d)
			}
		}
	}
	for _, ds := range l.spares {
		out = append(out, ds...)
	}
	return out
}

// Dir returns the directory holding homes, recordings and logs.
func (l *Lab) Dir() string { return l.dir }

// Close stops every process (SIGTERM, then SIGKILL), deletes the lab's
// namespaces and, when Options.Dir was empty, the directory. It is
// idempotent and bounded in time.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var procs []*proc
		for _, d := range l.allDevices() {
			if d.daemon != nil {
				procs = append(procs, d.daemon)
			}
		}
		for _, p := range []*proc{l.supernode, l.relay} {
			if p != nil {
				procs = append(procs, p)
			}
		}
		errs := make(chan error, len(procs))
		for _, p := range procs {
			go func(p *proc) { errs <- p.stop() }(p)
		}
		var err error
		for range procs {
			err = errors.Join(err, <-errs)
		}
		if l.net != nil {
			err = errors.Join(err, l.net.Close())
		}
		if l.tempDir {
			err = errors.Join(err, os.RemoveAll(l.dir))
		}
		l.closeErr = err
	})
	return l.closeErr
}

// RunMatrix starts a lab, makes the calls of opts.Pairs (every ordered pair
// of opts.Types by default), then the fault call if opts.Fault is set, and
// tears the lab down, also on error and when ctx is cancelled. A call that
// fails is a Pair with OK false, not an error; the error is for a lab that
// could not be built or run.
func RunMatrix(ctx context.Context, opts Options) (m *Matrix, err error) {
	l, err := Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down lab: %w", cerr))
		}
	}()
	pairs := l.opts.Pairs
	if pairs == nil {
		pairs = AllPairs(l.opts.Types)
	}
	m = &Matrix{Types: typeNames(l.opts.Types), LossPct: l.opts.LossPct, Pairs: []Pair{}}
	if !l.tempDir {
		m.Dir = l.dir
	}
	for _, spec := range pairs {
		if spec.Audio == 0 {
			spec.Audio = l.opts.Audio
		}
		if spec.DirectAfter == 0 {
			spec.DirectAfter = l.opts.DirectAfter
		}
		p := l.Call(ctx, spec)
		if ctx.Err() != nil {
			return m, ctx.Err()
		}
		m.Pairs = append(m.Pairs, p)
	}
	m.Summary = m.summarize()
	if l.opts.Fault != "" {
		calls := FaultCalls(l.opts.Types, l.opts.Fault)
		for i := range calls {
			calls[i].Spec.Audio = max(l.opts.Audio, faultAudio)
		}
		f, err := l.Fault(ctx, l.opts.Fault, calls)
		m.Fault = f
		if err != nil {
			return m, err
		}
	}
	return m, ctx.Err()
}

func typeNames(ts []netlab.NATType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

// logLevel is the --log-level of the lab's servers and daemons: info, or
// PARLEY_LOG_LEVEL when set (debug shows every step of a call).
func (l *Lab) logLevel() string {
	if v := os.Getenv("PARLEY_LOG_LEVEL"); v != "" {
		return v
	}
	return "info"
}
