package supernode

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/sys/unix"

	"github.com/parley-net/parley/internal/p2plimits"
)

// DefaultMaxDevices is how many devices a supernode holds connections to
// at once unless Config.MaxDevices says otherwise. Each idle device costs
// the supernode one connection and one file descriptor (see BENCHMARKS.md,
// Scale, for the memory).
//
// The limits that follow from MaxDevices (n):
//   - resource manager (p2plimits.Config.HostConns = n): n inbound
//     connections, n+256 in all, n+1,024 file descriptors, 8 streams per
//     connection, max(256, n/16) connections mid-handshake; the connection
//     past those is refused before its handshake, and counted and logged
//     (at most once a second) by the supernode;
//   - connection manager: trims only above n+512 connections, down to
//     n+256, so it never drops a device the resource manager admitted;
//   - relay reservations: RelayLimits, but max(256, n/2) reservations in
//     all, since a device behind a NAT keeps one for as long as it is
//     online (the NAT lab: about half of devices cannot be dialled);
//   - RLIMIT_NOFILE: the soft limit is raised to n+2,048 (and the hard
//     limit too where the process may), since Linux's default of 1,024
//     would stop the supernode long before n.
const DefaultMaxDevices = 10_000

// capacity is what New configures from Config.MaxDevices.
type capacity struct {
	max     int
	refused atomic.Int64
	logged  atomic.Int64 // Unix seconds of the last refusal logged
	log     *slog.Logger
}

func newCapacity(max int, log *slog.Logger) (*capacity, error) {
	if max < 0 {
		return nil, fmt.Errorf("supernode: MaxDevices %d: use a positive number or 0 for %d", max, DefaultMaxDevices)
	}
	if max == 0 {
		max = DefaultMaxDevices
	}
	c := &capacity{max: max, log: log}
	got, err := raiseFileLimit(uint64(max + 2048))
	switch {
	case err != nil:
		log.Warn("could not raise the file-descriptor limit", "want", max+2048, "have", got, "err", err)
	case got < uint64(max+1024):
		log.Warn("file-descriptor limit below the device capacity; devices past it will be refused", "limit", got, "max_devices", max)
	}
	return c, nil
}

// connManager trims connections only past what the resource manager admits.
func (c *capacity) connManager() (*connmgr.BasicConnMgr, error) {
	return connmgr.NewConnManager(c.max+256, c.max+512, connmgr.WithGracePeriod(time.Minute))
}

// relayLimits are RelayLimits with room for n/2 reservations.
func (c *capacity) relayLimits() relay.Resources {
	r := RelayLimits
	if l := RelayLimits.Limit; l != nil {
		cp := *l
		r.Limit = &cp
	}
	r.MaxReservations = max(RelayLimits.MaxReservations, c.max/2)
	return r
}

// resourceManager is p2plimits' manager sized for c.max devices, counting
// and logging the connections it refuses.
func (c *capacity) resourceManager(cfg p2plimits.Config) (network.ResourceManager, error) {
	cfg.HostConns = c.max
	rm, err := p2plimits.New(cfg)
	if err != nil {
		return nil, err
	}
	return &refusingRM{ResourceManager: rm, c: c}, nil
}

// refusingRM is a resource manager that reports the inbound connections it
// refuses.
type refusingRM struct {
	network.ResourceManager
	c *capacity
}

func (r *refusingRM) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	s, err := r.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err != nil && dir == network.DirInbound {
		n := r.c.refused.Add(1)
		now := time.Now().Unix()
		if last := r.c.logged.Load(); now > last && r.c.logged.CompareAndSwap(last, now) {
			r.c.log.Warn("refusing connections: the supernode holds as many devices as it may",
				"max_devices", r.c.max, "from", endpoint.String(), "refused_so_far", n, "reason", err.Error())
		}
	}
	return s, err
}

// Refused is how many inbound connections the resource manager refused.
func (s *Supernode) Refused() int64 { return s.capacity.refused.Load() }

// raiseFileLimit raises RLIMIT_NOFILE's soft limit to want (and the hard
// limit, where the process is allowed to) and returns the soft limit it
// ends with.
func raiseFileLimit(want uint64) (uint64, error) {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	if l.Max < want {
		raised := unix.Rlimit{Cur: want, Max: want}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
			return want, nil
		}
	}
	l.Cur = min(want, l.Max)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}
