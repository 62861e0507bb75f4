package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"golang.org/x/sys/unix"

	"github.com/parley-net/parley/discovery"
)

// LoadOptions configure RunLoad, the load generator: many device
// identities, each its own libp2p host (TCP, Noise, yamux), connected to one
// supernode.
type LoadOptions struct {
	// Target is the supernode's multiaddr with /p2p/<id>; required.
	Target string
	// Devices to connect in the first wave; required.
	Devices int
	// Over is how many more to try once the parent says go (a line on
	// Control); 0 is none.
	Over int
	// NATed is the share of devices that also take a relay reservation.
	NATed float64
	// Republish is how often each device stores its handle record again
	// (spread at random); 0 means never after the first.
	Republish time.Duration
	// First numbers this generator's first device: device i dials from
	// 127.(1+i>>16).(i>>8).(i&255) and is called load<i>, so generators
	// given disjoint ranges use disjoint addresses and handles.
	First int
	// Parallel bounds connections being made at once; 0 means 128.
	Parallel int
	// Control is where the parent's "go" and "check" lines come from;
	// Report receives one JSON LoadReport per line.
	Control io.Reader
	Report  io.Writer
	// Progress receives a line every 5 s while devices connect; nil is
	// silent.
	Progress io.Writer
}

// LoadReport is one line the load generator reports.
type LoadReport struct {
	Stage     string         `json:"stage"` // "connected", "over", "check"
	Tried     int            `json:"tried"`
	Connected int            `json:"connected"`
	Refused   int            `json:"refused"`
	Reserved  int            `json:"reserved"`
	ResFailed int            `json:"reservations_refused"`
	Published int            `json:"published"`
	Errors    map[string]int `json:"errors,omitempty"`
	// Served and Asked: devices already connected that got an answer from
	// the supernode (a GET_VALUE of their own record) after the over wave.
	Served  int     `json:"served"`
	Asked   int     `json:"asked"`
	Seconds float64 `json:"seconds"`
}

type loadDevice struct {
	h      host.Host
	handle string
	rec    []byte
}

type loadGen struct {
	o      LoadOptions
	target peer.AddrInfo
	mu     sync.Mutex
	live   []*loadDevice
	n      atomic.Int64
}

// LoadFDs is how many file descriptors a device holds in the load
// generator: its listening socket (which gives it its own source address)
// and its connection.
const LoadFDs = 2

// loadSpareFDs are the generator's descriptors besides its devices'.
const loadSpareFDs = 4096

// RunLoad connects o.Devices devices to the supernode, reports, waits for
// "go" on o.Control, tries o.Over more, reports, asks a sample of the first
// devices for their records, reports, and closes every host when o.Control
// ends.
func RunLoad(ctx context.Context, o LoadOptions) error {
	if o.Devices <= 0 || o.Target == "" {
		return errors.New("scale load: a target and a device count are required")
	}
	if o.Parallel == 0 {
		o.Parallel = 128
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	infos, err := discovery.ParseAddrs([]string{o.Target})
	if err != nil {
		return err
	}
	raiseFileLimit(LoadFDs*uint64(o.Devices+o.Over) + loadSpareFDs)
	g := &loadGen{o: o, target: infos[0]}
	g.n.Store(int64(o.First))
	defer g.close()
	enc := json.NewEncoder(o.Report)
	rep := g.wave(ctx, "connected", o.Devices)
	if err := enc.Encode(rep); err != nil {
		return err
	}
	stopRepublish := g.republishLoop(ctx)
	defer stopRepublish()
	in := bufio.NewScanner(o.Control)
	for in.Scan() {
		switch strings.TrimSpace(in.Text()) {
		case "go":
			if o.Over > 0 {
				if err := enc.Encode(g.wave(ctx, "over", o.Over)); err != nil {
					return err
				}
			}
		case "check":
			if err := enc.Encode(g.check(ctx)); err != nil {
				return err
			}
		}
	}
	return nil
}

// wave connects n devices, o.Parallel at a time.
func (g *loadGen) wave(ctx context.Context, stage string, n int) LoadReport {
	start := time.Now()
	rep := LoadReport{Stage: stage, Tried: n, Errors: map[string]int{}}
	var mu sync.Mutex
	sem := make(chan struct{}, g.o.Parallel)
	var wg sync.WaitGroup
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case <-tick.C:
			mu.Lock()
			fmt.Fprintf(g.o.Progress, "scale load: %s wave: %d of %d connected, %d refused, %.0f s\n", stage, rep.Connected, n, rep.Refused, time.Since(start).Seconds())
			mu.Unlock()
		default:
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d, reserved, resErr, err := g.device(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Refused++
				rep.Errors[shortReason(err)]++
				return
			}
			rep.Connected++
			rep.Published++
			if reserved {
				rep.Reserved++
			} else if resErr != nil {
				rep.ResFailed++
				rep.Errors["reservation: "+shortReason(resErr)]++
			}
			g.mu.Lock()
			g.live = append(g.live, d)
			g.mu.Unlock()
		}()
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	return rep
}

// device starts one device: connect, publish its handle record, and for the
// NATed share reserve a relay slot.
func (g *loadGen) device(ctx context.Context) (*loadDevice, bool, error, error) {
	// Each device listens on (and so, with SO_REUSEPORT, dials from) its
	// own loopback address, 127.1.0.0/16 and up: a supernode counts
	// reservations and connections per IP, and real devices have their
	// own addresses.
	i := g.n.Add(1)
	h, err := libp2p.New(
		libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/127.%d.%d.%d/tcp/0", 1+byte(i>>16), byte(i>>8), byte(i))),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.Ping(false),
	)
	if err != nil {
		return nil, false, nil, err
	}
	d := &loadDevice{h: h, handle: fmt.Sprintf("load%07d", i)}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := h.Connect(cctx, g.target); err != nil {
		h.Close()
		return nil, false, nil, err
	}
	if d.rec, err = deviceRecord(d.handle, h.ID(), time.Now()); err == nil {
		err = putRecord(cctx, h, g.target.ID, discovery.HandleKey(d.handle), d.rec)
	}
	if err != nil {
		h.Close()
		return nil, false, nil, fmt.Errorf("publish: %w", err)
	}
	if mrand.Float64() >= g.o.NATed {
		return d, false, nil, nil
	}
	_, rerr := client.Reserve(cctx, h, g.target)
	return d, rerr == nil, rerr, nil
}

// republishLoop stores a random live device's record again at the rate
// that gives every device one store per o.Republish.
func (g *loadGen) republishLoop(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if g.o.Republish > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				g.mu.Lock()
				n := len(g.live)
				g.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-time.After(g.o.Republish / time.Duration(max(1, n))):
				}
				g.mu.Lock()
				d := g.live[mrand.IntN(len(g.live))]
				g.mu.Unlock()
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				putRecord(pctx, d.h, g.target.ID, discovery.HandleKey(d.handle), d.rec)
				pcancel()
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// check asks up to 100 of the first wave's devices for their own record:
// service to devices connected before the over wave must go on.
func (g *loadGen) check(ctx context.Context) LoadReport {
	start := time.Now()
	rep := LoadReport{Stage: "check", Errors: map[string]int{}}
	g.mu.Lock()
	sample := append([]*loadDevice(nil), g.live[:min(100, len(g.live))]...)
	g.mu.Unlock()
	for _, d := range sample {
		rep.Asked++
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := getRecord(cctx, d.h, g.target.ID, discovery.HandleKey(d.handle))
		cancel()
		switch {
		case err != nil:
			rep.Errors[shortReason(err)]++
		case string(v) != string(d.rec):
			rep.Errors["wrong record"]++
		default:
			rep.Served++
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep
}

func (g *loadGen) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range g.live {
		wg.Add(1)
		go func() { defer wg.Done(); d.h.Close() }()
	}
	wg.Wait()
}

// putRecord stores a record on one DHT server: one PUT_VALUE of parley's
// DHT protocol, as kad-dht's PutValue sends to each of the closest servers.
func putRecord(ctx context.Context, h host.Host, p peer.ID, key string, value []byte) error {
	m := pb.NewMessage(pb.Message_PUT_VALUE, []byte(key), 0)
	m.Record = record.MakePutRecord(key, value)
	_, err := discovery.KadRequest(ctx, h, p, m)
	return err
}

// getRecord asks one DHT server for the value under key.
func getRecord(ctx context.Context, h host.Host, p peer.ID, key string) ([]byte, error) {
	resp, err := discovery.KadRequest(ctx, h, p, pb.NewMessage(pb.Message_GET_VALUE, []byte(key), 0))
	if err != nil {
		return nil, err
	}
	if resp.GetRecord() == nil {
		return nil, errors.New("no record")
	}
	return resp.GetRecord().GetValue(), nil
}

// addrForm is an IPv4 address with an optional port, replaced in error
// texts so that errors count by kind, not by address.
var addrForm = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+(:\d+)?`)

// shortReason is an error's last line, for counting errors by kind.
func shortReason(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	s := strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "* ")
	s = addrForm.ReplaceAllString(s, "ADDR")
	if i := strings.LastIndex(s, "): "); i >= 0 {
		s = s[i+3:]
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// topErrors lists error counts, most frequent first.
func topErrors(m map[string]int) []string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var out []string
	for i, e := range all {
		if i == 5 {
			out = append(out, fmt.Sprintf("and %d other kinds", len(all)-5))
			break
		}
		out = append(out, fmt.Sprintf("%d× %s", e.v, e.k))
	}
	return out
}

// raiseFileLimit raises RLIMIT_NOFILE to want where allowed and returns
// the soft limit it ends with.
func raiseFileLimit(want uint64) uint64 {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) != nil || l.Cur >= want {
		return l.Cur
	}
	if unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: max(want, l.Max)}) == nil {
		return want
	}
	l.Cur = min(want, l.Max)
	unix.Setrlimit(unix.RLIMIT_NOFILE, &l)
	return l.Cur
}
