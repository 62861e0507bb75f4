package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps the bind mounts that name namespaces.
const netnsDir = "/run/netns"

// Host is one machine of the lab: a network namespace with one interface.
type Host struct {
	// Name is the name given to AddPublicHost, AddNATHost or AddHostBehind.
	Name string
	// Namespace is the network namespace the host lives in
	// ("<prefix>-h-<name>"); pass it to `ip netns exec`.
	Namespace string
	// Interface is the host's one interface inside Namespace.
	Interface string
	// IP is the host's own address on Interface: 203.0.113.x for public
	// hosts, 198.51.100.x for Public clients, 192.0.2.x behind a NAT.
	IP netip.Addr
	// PublicIP is the address the internet sees: the router's WAN address
	// behind a NAT, IP otherwise.
	PublicIP netip.Addr
	// NAT is the type of the host's router; Public when it has none.
	NAT NATType
	// Router is the namespace of the host's NAT router ("<prefix>-r-<name
	// of the first host behind it>"); empty when NAT is Public.
	Router string

	lab    *Lab
	router *router
	routes []string // ip route commands that give the host its routes
}

// String returns "name (ip, nat type)".
func (h *Host) String() string {
	if h.IP != h.PublicIP {
		return fmt.Sprintf("%s (%s via %s, %s)", h.Name, h.IP, h.PublicIP, h.NAT)
	}
	return fmt.Sprintf("%s (%s, %s)", h.Name, h.IP, h.NAT)
}

// Command returns a command that runs name with args inside the host's
// namespace (through `ip netns exec`). ctx kills it as exec.CommandContext
// does.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Namespace, name}, args...)...)
}

// Do runs fn on an OS thread that has entered the host's namespace, and
// returns fn's error. Sockets fn opens belong to the namespace for their
// whole life and may be used from any goroutine afterwards; goroutines fn
// starts run in the caller's namespace, not the host's.
//
// Only sockets fn itself opens are inside: a library that opens sockets
// later on goroutines of its own (libp2p dialling, pion gathering ICE
// candidates) escapes to the caller's namespace. Run such code as a
// process with Command.
//
// fn runs on a goroutine of its own whose thread is thrown away afterwards,
// so no goroutine ever runs in a namespace by accident. A panic in fn is
// re-raised in the caller; fn must not call runtime.Goexit (t.FailNow).
func (h *Host) Do(fn func() error) error { return doIn(h.Namespace, fn) }

var errGoexit = errors.New("netlab: function run in a namespace called runtime.Goexit (t.FailNow?)")

// doIn runs fn on a fresh OS thread switched into namespace ns.
func doIn(ns string, fn func() error) error {
	f, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return fmt.Errorf("netlab: open namespace %s: %w", ns, err)
	}
	defer f.Close()

	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread changes namespace, so it must exit with
		// this goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		res := result{err: errGoexit}
		defer func() {
			if p := recover(); p != nil {
				res = result{panicked: true, value: p}
			}
			done <- res
		}()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			res.err = fmt.Errorf("netlab: enter namespace %s: %w", ns, err)
			return
		}
		res.err = fn()
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	return res.err
}

// writeSysctls writes /proc/sys values inside namespace ns; keys are paths
// under /proc/sys/net such as "ipv4/ip_forward". /proc/sys/net shows the
// namespace of the thread that opens it.
func writeSysctls(ns string, kv [][2]string) error {
	return doIn(ns, func() error {
		for _, p := range kv {
			path := filepath.Join("/proc/sys/net", p[0])
			if err := os.WriteFile(path, []byte(p[1]+"\n"), 0o644); err != nil {
				return fmt.Errorf("netlab: sysctl net/%s=%s in %s: %w", p[0], p[1], ns, err)
			}
		}
		return nil
	})
}
