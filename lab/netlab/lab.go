package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Address plan (documentation ranges only, RFC 5737).
var (
	publicNet  = netip.MustParsePrefix("203.0.113.0/24")  // public hosts (supernodes, relays)
	clientNet  = netip.MustParsePrefix("198.51.100.0/24") // router WANs and Public clients
	lanNet     = netip.MustParsePrefix("192.0.2.0/24")    // split into one /29 per NAT
	publicGW   = netip.MustParseAddr("203.0.113.1")       // on the internet bridge
	clientGW   = netip.MustParseAddr("198.51.100.1")      // on the internet bridge
	lanBits    = 29
	firstHost  = 10  // first host address on the internet: .10
	lastHost   = 254 // last host address on the internet
	maxLANs    = 1 << (lanBits - lanNet.Bits())
	lanClients = 1<<(32-lanBits) - 3 // minus network, broadcast, router
)

const (
	maxPrefixLen  = 8
	maxNameLen    = 32
	maxLinks      = 1000 // veth numbers stay within three digits
	defaultPrefix = "pl"
)

// Options configures New.
type Options struct {
	// Prefix starts the name of every namespace ("<Prefix>-inet",
	// "<Prefix>-h-<host>", "<Prefix>-r-<host>") and interface
	// ("<Prefix>br", "<Prefix>e12", ...) of the lab: 2 to 8 lowercase
	// letters and digits, starting with a letter. Empty means "pl" and six
	// random hex digits, new on every run.
	//
	// If namespaces with this prefix exist, New deletes them when the
	// process that made them is gone and fails with ErrPrefixInUse when it
	// still runs.
	Prefix string
	// Logger receives a debug record per command run and an info record
	// when the lab is built and torn down. Nil discards them.
	Logger *slog.Logger
}

// Lab is a running topology: an internet namespace with a bridge, public
// hosts on it, and NAT routers each with hosts behind them. Its methods are
// safe for concurrent use. Close tears it down.
type Lab struct {
	prefix string
	run    string // random token in the owner marker
	log    *slog.Logger

	mu         sync.Mutex
	closed     bool
	namespaces []string // every namespace this lab made or began to make
	hosts      []*Host
	links      int // veth pairs made; numbers interface names
	nPublic    int // public hosts on 203.0.113.0/24
	nClient    int // routers and Public clients on 198.51.100.0/24
	nLAN       int // LANs carved from 192.0.2.0/24
	nBlock     int // BlockUDP tables made
}

// router is a NAT router namespace and the LAN behind it.
type router struct {
	ns      string
	nat     NATType
	wan     string // interface name in ns
	wanIP   netip.Addr
	lan     string // LAN bridge name in ns
	lanNet  netip.Prefix
	clients int
}

// New builds the internet namespace of a lab: a bridge holding the
// gateway addresses 203.0.113.1/24 and 198.51.100.1/24, which route
// nowhere. On error it removes whatever it made. ctx bounds the setup.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = defaultPrefix + randomHex(3)
	} else if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	l := &Lab{prefix: prefix, run: randomHex(4), log: log.With("lab", prefix)}

	if err := l.claimPrefix(ctx); err != nil {
		return nil, err
	}
	if err := l.buildInternet(ctx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	l.log.Info("lab up", "internet", inetNamespace(prefix))
	return l, nil
}

// Prefix returns the lab's prefix, the argument Sweep needs to remove it.
func (l *Lab) Prefix() string { return l.prefix }

// Internet returns the name of the internet namespace (the bridge and the
// gateway addresses live there).
func (l *Lab) Internet() string { return inetNamespace(l.prefix) }

// Hosts returns the lab's hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts)
}

func validPrefix(p string) error {
	ok := len(p) >= 2 && len(p) <= maxPrefixLen && p[0] >= 'a' && p[0] <= 'z' &&
		strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
	if !ok {
		return fmt.Errorf("netlab: invalid prefix %q (want 2-%d lowercase letters and digits, starting with a letter)", p, maxPrefixLen)
	}
	return nil
}

func validName(n string) error {
	ok := n != "" && len(n) <= maxNameLen && n[0] != '-' &&
		strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
	if !ok {
		return fmt.Errorf("netlab: invalid host name %q (want 1-%d lowercase letters, digits and hyphens)", n, maxNameLen)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Names. Interface names stay within IFNAMSIZ-1 = 15 bytes: a prefix of at
// most 8, then at most 4.
func inetNamespace(p string) string       { return p + "-inet" }
func hostNamespace(p, name string) string { return p + "-h-" + name }
func routerNamespace(p, n string) string  { return p + "-r-" + n }
func bridgeName(p string) string          { return p + "br" }
func lanBridgeName(p string) string       { return p + "lan" }

// vethNames returns the ends of veth pair n: the host (or router WAN) end
// and the end enslaved to a bridge.
func vethNames(p string, n int) (end, port string) {
	return fmt.Sprintf("%se%d", p, n), fmt.Sprintf("%sb%d", p, n)
}

// claimPrefix removes a crashed run's namespaces with l's prefix, or fails
// if their owner is alive.
func (l *Lab) claimPrefix(ctx context.Context) error {
	nss, err := namespaces(l.prefix)
	if err != nil {
		return err
	}
	var mine []string
	for _, ns := range nss {
		if runPrefix(ns) == l.prefix {
			mine = append(mine, ns)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	if o, ok := readOwner(ctx, l.log, l.prefix); ok && o.alive() {
		return fmt.Errorf("%w: %s has %d namespaces owned by live process %d", ErrPrefixInUse, l.prefix, len(mine), o.pid)
	}
	l.log.Info("removing leftovers of a dead run", "namespaces", mine)
	var errs []error
	for _, ns := range mine {
		errs = append(errs, deleteNamespace(ns))
	}
	return errors.Join(errs...)
}

// addNamespace creates namespace ns, recording it first so Close removes
// it even if creation fails half way, and sets its sysctls: IPv4 only, and
// forwarding only in routers.
func (l *Lab) addNamespace(ctx context.Context, ns string, forward bool) error {
	l.namespaces = append(l.namespaces, ns)
	if _, err := run(ctx, l.log, "", "ip", "netns", "add", ns); err != nil {
		return err
	}
	fwd := "0"
	if forward {
		fwd = "1"
	}
	err := writeSysctls(ns, [][2]string{
		// The lab is IPv4: no link-local IPv6 paths around the NATs.
		{"ipv6/conf/all/disable_ipv6", "1"},
		{"ipv6/conf/default/disable_ipv6", "1"},
		// New namespaces inherit IPv4 settings from the host's; be explicit.
		{"ipv4/ip_forward", fwd},
	})
	if err != nil {
		return err
	}
	// With br_netfilter loaded, bridged frames would cross the IP hooks:
	// LAN-to-LAN traffic would meet the router's forward policy, as no
	// home router's switch does. The files exist only with br_netfilter.
	err = writeSysctls(ns, [][2]string{
		{"bridge/bridge-nf-call-iptables", "0"},
		{"bridge/bridge-nf-call-ip6tables", "0"},
		{"bridge/bridge-nf-call-arptables", "0"},
	})
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

func (l *Lab) buildInternet(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ns := inetNamespace(l.prefix)
	if err := l.addNamespace(ctx, ns, false); err != nil {
		return err
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		return fmt.Errorf("netlab: own start time: %w", err)
	}
	br := bridgeName(l.prefix)
	return ipBatch(ctx, l.log, ns,
		"link set lo up",
		"link add name "+br+" type bridge",
		fmt.Sprintf("link set dev %s alias %q", br, ownerMarker(os.Getpid(), start, l.run)),
		fmt.Sprintf("addr add %s/%d dev %s", publicGW, publicNet.Bits(), br),
		fmt.Sprintf("addr add %s/%d dev %s", clientGW, clientNet.Bits(), br),
		"link set "+br+" up",
	)
}

// begin checks the lab is open and the name is new, and returns the
// function that undoes a failed Add: it deletes the namespaces the Add
// made. Called with l.mu held.
func (l *Lab) begin(name string) (undo func(*error), err error) {
	if l.closed {
		return nil, ErrClosed
	}
	if err := validName(name); err != nil {
		return nil, err
	}
	for _, h := range l.hosts {
		if h.Name == name {
			return nil, fmt.Errorf("netlab: host %q already exists", name)
		}
	}
	mark := len(l.namespaces)
	return func(errp *error) {
		if *errp == nil {
			return
		}
		var errs []error
		kept := l.namespaces[:mark]
		for _, ns := range l.namespaces[mark:] {
			if err := deleteNamespace(ns); err != nil {
				kept = append(kept, ns) // Close tries again
				errs = append(errs, err)
			}
		}
		l.namespaces = kept
		*errp = errors.Join(append([]error{fmt.Errorf("netlab: add host %s: %w", name, *errp)}, errs...)...)
	}, nil
}

// nextLink returns the number of a new veth pair.
func (l *Lab) nextLink() (int, error) {
	if l.links >= maxLinks {
		return 0, fmt.Errorf("%w: %d links", ErrExhausted, maxLinks)
	}
	l.links++
	return l.links - 1, nil
}

// attachToInternet links namespace ns to the internet bridge by veth pair
// n, with address ip; it returns the interface name in ns and the routes
// given. The on-link route to the other /24 lets public hosts and
// WANs reach each other without forwarding in the internet namespace.
func (l *Lab) attachToInternet(ctx context.Context, ns string, n int, ip netip.Addr) (string, []string, error) {
	end, port := vethNames(l.prefix, n)
	inet := inetNamespace(l.prefix)
	if err := ipBatch(ctx, l.log, "", fmt.Sprintf("link add name %s netns %s type veth peer name %s netns %s", end, ns, port, inet)); err != nil {
		return "", nil, err
	}
	if err := ipBatch(ctx, l.log, inet, fmt.Sprintf("link set %s master %s up", port, bridgeName(l.prefix))); err != nil {
		return "", nil, err
	}
	own, other, gw := publicNet, clientNet, publicGW
	if clientNet.Contains(ip) {
		own, other, gw = clientNet, publicNet, clientGW
	}
	routes := []string{
		fmt.Sprintf("route replace %s dev %s scope link", other, end),
		fmt.Sprintf("route replace default via %s dev %s", gw, end),
	}
	cmds := append([]string{
		"link set lo up",
		fmt.Sprintf("addr add %s/%d dev %s", ip, own.Bits(), end),
		"link set " + end + " up",
	}, routes...)
	return end, routes, ipBatch(ctx, l.log, ns, cmds...)
}

// nthAddr returns the address n after the start of p.
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// AddPublicHost adds a host directly on the internet bridge with the next
// free address in 203.0.113.0/24 (from .10): a supernode, a relay, a STUN
// server. Its NAT is Public.
func (l *Lab) AddPublicHost(ctx context.Context, name string) (h *Host, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	undo, err := l.begin(name)
	if err != nil {
		return nil, err
	}
	defer undo(&err)
	if firstHost+l.nPublic > lastHost {
		return nil, fmt.Errorf("%w: %s is full", ErrExhausted, publicNet)
	}
	ip := nthAddr(publicNet, firstHost+l.nPublic)
	l.nPublic++
	return l.addInternetHost(ctx, name, ip)
}

func (l *Lab) addInternetHost(ctx context.Context, name string, ip netip.Addr) (*Host, error) {
	ns := hostNamespace(l.prefix, name)
	if err := l.addNamespace(ctx, ns, false); err != nil {
		return nil, err
	}
	n, err := l.nextLink()
	if err != nil {
		return nil, err
	}
	ifname, routes, err := l.attachToInternet(ctx, ns, n, ip)
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, Namespace: ns, Interface: ifname, IP: ip, PublicIP: ip, NAT: Public, lab: l, routes: routes}
	l.hosts = append(l.hosts, h)
	l.log.Info("host added", "host", h.String())
	return h, nil
}

// AddNATHost adds a client host behind a router of its own with NAT type
// t. The router's WAN side takes the next free address in 198.51.100.0/24
// (from .10) on the internet bridge; its LAN is the next free /29 of
// 192.0.2.0/24, the router holding the first address and the host the
// second. With t == Public there is no router: the host sits on the
// internet bridge with an address in 198.51.100.0/24.
func (l *Lab) AddNATHost(ctx context.Context, name string, t NATType) (h *Host, err error) {
	if _, err := ParseNATType(string(t)); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	undo, err := l.begin(name)
	if err != nil {
		return nil, err
	}
	defer undo(&err)
	if firstHost+l.nClient > lastHost {
		return nil, fmt.Errorf("%w: %s is full", ErrExhausted, clientNet)
	}
	wanIP := nthAddr(clientNet, firstHost+l.nClient)
	if t == Public {
		l.nClient++
		return l.addInternetHost(ctx, name, wanIP)
	}
	if l.nLAN >= maxLANs {
		return nil, fmt.Errorf("%w: %s holds %d LANs", ErrExhausted, lanNet, maxLANs)
	}
	l.nClient++
	lan := netip.PrefixFrom(nthAddr(lanNet, l.nLAN<<(32-lanBits)), lanBits)
	l.nLAN++

	r := &router{ns: routerNamespace(l.prefix, name), nat: t, wanIP: wanIP, lan: lanBridgeName(l.prefix), lanNet: lan}
	if err := l.addNamespace(ctx, r.ns, true); err != nil {
		return nil, err
	}
	n, err := l.nextLink()
	if err != nil {
		return nil, err
	}
	r.wan, _ = vethNames(l.prefix, n)
	// The rules go in before any link exists, so no packet crosses the
	// router unfiltered.
	rules, err := routerRules(t, r.wan, r.lan)
	if err != nil {
		return nil, err
	}
	if _, err := run(ctx, l.log, rules, "ip", "netns", "exec", r.ns, "nft", "-f", "-"); err != nil {
		return nil, fmt.Errorf("load %s rules: %w", t, err)
	}
	if _, _, err := l.attachToInternet(ctx, r.ns, n, wanIP); err != nil {
		return nil, err
	}
	if err := ipBatch(ctx, l.log, r.ns,
		"link add name "+r.lan+" type bridge",
		fmt.Sprintf("addr add %s/%d dev %s", nthAddr(lan, 1), lanBits, r.lan),
		"link set "+r.lan+" up",
	); err != nil {
		return nil, err
	}
	return l.addLANHost(ctx, name, r)
}

// AddHostBehind adds a host on the LAN of behind's router, sharing its NAT
// mapping table (two devices of one home). Each LAN holds up to 5 hosts.
func (l *Lab) AddHostBehind(ctx context.Context, name string, behind *Host) (h *Host, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	undo, err := l.begin(name)
	if err != nil {
		return nil, err
	}
	defer undo(&err)
	if behind == nil || behind.lab != l || behind.router == nil {
		return nil, fmt.Errorf("netlab: AddHostBehind needs a host of this lab behind a NAT router")
	}
	return l.addLANHost(ctx, name, behind.router)
}

func (l *Lab) addLANHost(ctx context.Context, name string, r *router) (*Host, error) {
	if r.clients >= lanClients {
		return nil, fmt.Errorf("%w: LAN %s of %s is full", ErrExhausted, r.lanNet, r.ns)
	}
	ip := nthAddr(r.lanNet, 2+r.clients)
	r.clients++
	ns := hostNamespace(l.prefix, name)
	if err := l.addNamespace(ctx, ns, false); err != nil {
		return nil, err
	}
	n, err := l.nextLink()
	if err != nil {
		return nil, err
	}
	end, port := vethNames(l.prefix, n)
	if err := ipBatch(ctx, l.log, "", fmt.Sprintf("link add name %s netns %s type veth peer name %s netns %s", end, ns, port, r.ns)); err != nil {
		return nil, err
	}
	if err := ipBatch(ctx, l.log, r.ns, fmt.Sprintf("link set %s master %s up", port, r.lan)); err != nil {
		return nil, err
	}
	routes := []string{fmt.Sprintf("route replace default via %s dev %s", nthAddr(r.lanNet, 1), end)}
	cmds := append([]string{
		"link set lo up",
		fmt.Sprintf("addr add %s/%d dev %s", ip, lanBits, end),
		"link set " + end + " up",
	}, routes...)
	if err := ipBatch(ctx, l.log, ns, cmds...); err != nil {
		return nil, err
	}
	h := &Host{
		Name: name, Namespace: ns, Interface: end, IP: ip, PublicIP: r.wanIP,
		NAT: r.nat, Router: r.ns, lab: l, router: r, routes: routes,
	}
	l.hosts = append(l.hosts, h)
	l.log.Info("host added", "host", h.String(), "router", r.ns)
	return h, nil
}

// FlushNAT makes h's router forget every mapping, as a router reboot
// does: it empties the mapping maps of full-cone and restricted routers
// and flushes the router's conntrack table (over ctnetlink, so the
// conntrack tool is not needed). Established flows through the router
// then fail until they send again and get a new mapping; port-preserving
// types will usually pick the same port again, Symmetric a new one. It is
// an error if h has no router.
func (l *Lab) FlushNAT(ctx context.Context, h *Host) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if h == nil || h.lab != l || h.router == nil {
		return fmt.Errorf("netlab: flush NAT: %v has no NAT router in this lab", h)
	}
	r := h.router
	if cmds := flushRules(r.nat); cmds != "" {
		if _, err := run(ctx, l.log, cmds, "ip", "netns", "exec", r.ns, "nft", "-f", "-"); err != nil {
			return fmt.Errorf("netlab: flush NAT of %s: %w", h.Name, err)
		}
	}
	if err := doIn(r.ns, flushConntrack); err != nil {
		return fmt.Errorf("netlab: flush NAT of %s: %w", h.Name, err)
	}
	l.log.Info("NAT flushed", "router", r.ns)
	return nil
}

// SetLinkUp takes h's interface down or brings it back up with its
// routes: down, h is offline (its sockets see "network unreachable");
// up, it is back with the same addresses. The NAT router, and any other
// host behind it, are not touched.
func (l *Lab) SetLinkUp(ctx context.Context, h *Host, up bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if h == nil || h.lab != l {
		return fmt.Errorf("netlab: set link: %v is not a host of this lab", h)
	}
	if !up {
		return ipBatch(ctx, l.log, h.Namespace, "link set "+h.Interface+" down")
	}
	// Taking a link down drops its routes; put them back.
	return ipBatch(ctx, l.log, h.Namespace, append([]string{"link set " + h.Interface + " up"}, h.routes...)...)
}

// Close deletes every namespace of the lab, and with them all links,
// rules and NAT state. It is idempotent, and safe after a partial New or a
// Sweep; if another lab has since taken the prefix, Close leaves it alone.
// Processes still inside the namespaces are not killed (see Sweep).
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if o, ok := readOwner(ctx, l.log, l.prefix); ok && o.run != l.run {
		l.log.Warn("prefix taken by another lab; leaving it", "owner_pid", o.pid)
		return nil
	}
	start := time.Now()
	var errs []error
	// Hosts first, the internet last: the reverse of creation.
	for _, ns := range slices.Backward(l.namespaces) {
		errs = append(errs, deleteNamespace(ns))
	}
	l.log.Info("lab down", "namespaces", len(l.namespaces), "took", time.Since(start))
	return errors.Join(errs...)
}
