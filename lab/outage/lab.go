package outage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/parley-net/parley/lab/natlab"
	"github.com/parley-net/parley/lab/netlab"
	"github.com/parley-net/parley/node"
)

// Bounds on the lab's waits; hitting one means something is broken (or
// is the finding: a daemon that cannot start while its supernodes are
// down).
const (
	serverReadyTimeout = 30 * time.Second
	daemonReadyTimeout = 60 * time.Second
	commandTimeout     = 20 * time.Second
	apiTimeout         = 5 * time.Second
)

// server is one supernode or cloud relay of a run's topology.
type server struct {
	name  string // sn-a1, relay
	site  string // site-a, cloud
	relay bool   // the cloud relay (parley relay), else a supernode
	host  *netlab.Host
	home  string
	args  []string // without --bootstrap, added at each start
	runs  int      // starts so far, for the log file names

	proc  *natlab.Proc
	addrs []string
}

// device is one user's device in a run.
type device struct {
	Device
	host *netlab.Host
	home string
	runs int

	// mu guards proc and client, which an offline window replaces.
	mu     sync.Mutex
	proc   *natlab.Proc
	client *node.Client
}

func (d *device) api() *node.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// lab is one topology's network and processes for one run.
type lab struct {
	r       *run
	net     *netlab.Lab
	servers []*server
	devices map[string]*device
	order   []*device // in workload order
	relay   *server
	log     *slog.Logger
}

// supernodes returns the lab's supernodes in start order.
func (l *lab) supernodes() []*server {
	var out []*server
	for _, s := range l.servers {
		if !s.relay {
			out = append(out, s)
		}
	}
	return out
}

// buildLab makes the namespaces and starts the servers and daemons.
func buildLab(ctx context.Context, r *run) (l *lab, err error) {
	l = &lab{r: r, devices: map[string]*device{}, log: r.opts.Logger}
	defer func() {
		if err != nil {
			l.close()
			l = nil
		}
	}()
	if l.net, err = netlab.New(ctx, netlab.Options{Logger: l.log}); err != nil {
		return l, err
	}
	// Servers first: they take 203.0.113.10 onwards.
	o := r.opts
	for s := range o.Sites {
		site := fmt.Sprintf("site-%c", 'a'+s)
		if r.topo == Cloud {
			site = "cloud"
		}
		for i := range o.SupernodesPerSite {
			name := fmt.Sprintf("sn-%c%d", 'a'+s, i+1)
			h, err := l.net.AddPublicHost(ctx, name)
			if err != nil {
				return l, err
			}
			l.servers = append(l.servers, l.supernodeServer(name, site, h))
		}
	}
	h, err := l.net.AddPublicHost(ctx, "relay")
	if err != nil {
		return l, err
	}
	l.relay = l.relayServer(h)
	l.servers = append(l.servers, l.relay)
	for _, d := range r.wl.Devices {
		h, err := l.net.AddNATHost(ctx, d.Handle, d.NAT)
		if err != nil {
			return l, err
		}
		dev := &device{Device: d, host: h, home: filepath.Join(r.dir, "homes", d.Handle)}
		if err := copyDir(filepath.Join(r.opts.idDir, d.Handle), dev.home); err != nil {
			return l, err
		}
		l.devices[d.Handle] = dev
		l.order = append(l.order, dev)
	}
	// The first supernode, then the rest bootstrapping from it, and the
	// relay.
	sns := l.supernodes()
	if err := l.startServer(ctx, sns[0]); err != nil {
		return l, err
	}
	errs := make(chan error, len(l.servers))
	for _, s := range l.servers[1:] {
		go func(s *server) { errs <- l.startServer(ctx, s) }(s)
	}
	for range l.servers[1:] {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return l, err
	}
	derrs := make(chan error, len(l.order))
	for _, d := range l.order {
		go func(d *device) { derrs <- l.startDaemon(ctx, d) }(d)
	}
	for range l.order {
		err = errors.Join(err, <-derrs)
	}
	return l, err
}

func (l *lab) supernodeServer(name, site string, h *netlab.Host) *server {
	ip := h.IP.String()
	s := &server{name: name, site: site, host: h, home: filepath.Join(l.r.dir, "servers", name)}
	s.args = []string{"--home", s.home, "--log-level", "info", "supernode",
		"--listen", fmt.Sprintf("/ip4/%s/tcp/%d", ip, natlab.Libp2pTCPPort),
		"--listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, natlab.QUICPort),
		"--stun", fmt.Sprintf("%s:%d", ip, natlab.STUNPort),
		"--turn-udp", fmt.Sprintf("%s:%d", ip, natlab.TURNUDPPort),
		"--turn-tcp", fmt.Sprintf("%s:%d", ip, natlab.TURNTCPPort),
		"--turn-relay-ip", ip}
	for _, c := range natlab.LabCIDRs() {
		s.args = append(s.args, "--turn-allow-cidr", c)
	}
	return s
}

func (l *lab) relayServer(h *netlab.Host) *server {
	ip := h.IP.String()
	s := &server{name: "relay", site: "cloud", relay: true, host: h, home: filepath.Join(l.r.dir, "servers", "relay")}
	s.args = []string{"--home", s.home, "--log-level", "info", "relay",
		"--relay-ip", ip, "--secret", natlab.RandomSecret(),
		"--listen-udp", fmt.Sprintf("%s:%d", ip, natlab.TURNUDPPort),
		"--listen-tcp", fmt.Sprintf("%s:%d", ip, natlab.TURNTCPPort),
		"--libp2p-listen", fmt.Sprintf("/ip4/%s/tcp/%d", ip, natlab.Libp2pTCPPort),
		"--libp2p-listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, natlab.QUICPort)}
	for _, c := range natlab.LabCIDRs() {
		s.args = append(s.args, "--allow-cidr", c)
	}
	return s
}

// startServer starts (or restarts, same home) a server and waits for its
// addresses. A supernode bootstraps from every other supernode whose
// addresses are known.
func (l *lab) startServer(ctx context.Context, s *server) error {
	if err := os.MkdirAll(s.home, 0o700); err != nil {
		return err
	}
	args := append([]string(nil), s.args...)
	if !s.relay {
		for _, o := range l.supernodes() {
			if o != s && len(o.addrs) > 0 {
				args = append(args, "--bootstrap", tcpAddr(o.addrs))
			}
		}
	}
	s.runs++
	name := fmt.Sprintf("%s-%d", s.name, s.runs)
	p, err := natlab.StartProc(s.host.Command(context.Background(), l.r.opts.binary, args...), l.r.dir, name)
	if err != nil {
		return err
	}
	addrs, err := p.Multiaddrs(ctx)
	if err != nil {
		p.Kill()
		return fmt.Errorf("%s: %w\n%s", s.name, err, p.Tail(10))
	}
	l.r.mu.Lock()
	s.proc, s.addrs = p, addrs
	l.r.mu.Unlock()
	return nil
}

// tcpAddr returns the TCP multiaddr among addrs (which every client, the
// udp-blocked ones too, can reach), else the first.
func tcpAddr(addrs []string) string {
	for _, a := range addrs {
		if strings.Contains(a, "/tcp/") {
			return a
		}
	}
	return addrs[0]
}

// startDaemon starts (or restarts, same home) a device's daemon, waits
// until it is ready and connects to its control API.
func (l *lab) startDaemon(ctx context.Context, d *device) error {
	args := []string{"--home", d.home, "--log-level", "info", "daemon",
		"--listen", "/ip4/0.0.0.0/tcp/0", "--listen", "/ip4/0.0.0.0/udp/0/quic-v1",
		"--path", l.r.topo.path(), "--auto-answer", "--speech"}
	if d.Mobile {
		args = append(args, "--profile", "mobile")
	}
	l.r.mu.Lock()
	for _, s := range l.supernodes() {
		args = append(args, "--bootstrap", tcpAddr(s.addrs))
	}
	args = append(args, "--cloud-relay", tcpAddr(l.relay.addrs))
	l.r.mu.Unlock()
	d.runs++
	name := fmt.Sprintf("daemon-%s-%d", d.Handle, d.runs)
	p, err := natlab.StartProc(d.host.Command(context.Background(), l.r.opts.binary, args...), l.r.dir, name)
	if err != nil {
		return err
	}
	if err := p.WaitReady(ctx, daemonReadyTimeout); err != nil {
		p.Kill()
		return fmt.Errorf("daemon %s (%s): %w\n%s", d.Handle, d.NAT, err, p.Tail(10))
	}
	// "ready" comes just before the daemon serves its API.
	var c *node.Client
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err = node.Dial(d.home); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		p.Kill()
		return err
	}
	d.mu.Lock()
	d.proc, d.client = p, c
	d.mu.Unlock()
	return nil
}

// stopDaemon takes the device offline.
func (l *lab) stopDaemon(d *device) error {
	d.mu.Lock()
	p := d.proc
	d.proc, d.client = nil, nil
	d.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop()
}

// close stops every process and deletes the namespaces.
func (l *lab) close() error {
	var stops []func() error
	for _, d := range l.order {
		d.mu.Lock()
		if d.proc != nil {
			stops = append(stops, d.proc.Stop)
		}
		d.mu.Unlock()
	}
	l.r.mu.Lock()
	for _, s := range l.servers {
		if s.proc != nil {
			stops = append(stops, s.proc.Stop)
		}
	}
	l.r.mu.Unlock()
	errs := make(chan error, len(stops))
	for _, f := range stops {
		go func() { errs <- f() }()
	}
	var err error
	for range stops {
		err = errors.Join(err, <-errs)
	}
	if l.net != nil {
		err = errors.Join(err, l.net.Close())
	}
	return err
}

// initIdentities makes one identity per workload device in dir, once per
// sweep; each run copies them into fresh homes.
func initIdentities(ctx context.Context, binary, dir string, devs []Device) error {
	return natlab.Parallel(devs, 2, func(d Device) error {
		home := filepath.Join(dir, d.Handle)
		if err := os.MkdirAll(home, 0o700); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		cmd := exec.CommandContext(cctx, binary, "--home", home, "id", "init", "--handle", d.Handle, "--device", d.Handle)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := natlab.Spawn(cmd); err != nil {
			return err
		}
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("id init %s: %w: %s", d.Handle, err, strings.TrimSpace(out.String()))
		}
		return nil
	})
}

// copyDir copies the regular files of a flat tree.
func copyDir(from, to string) error {
	return filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
