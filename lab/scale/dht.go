package scale

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/parley-net/parley/discovery"
)

// Defaults of DHTOptions.
const (
	DefaultLatency   = 20 * time.Millisecond
	DefaultDuration  = time.Minute
	DefaultLookups   = 500
	DefaultParallel  = 16
	DefaultBootPeers = 3
)

// DHTOptions configure RunDHT. Every zero value means the default named.
type DHTOptions struct {
	// Servers are DHT servers (supernodes); required, at least 2.
	Servers int
	// Devices are DHT clients that publish a handle record each and
	// resolve others'; 0 means Servers/10, at least 10.
	Devices int
	// Publishers is how many of the devices publish a record (the lookups
	// ask for theirs); 0 means all. Devices are DHT clients: the others
	// still connect to servers, but publishing thousands of records costs
	// the simulation more than the DHT.
	Publishers int
	// Latency is every link's one-way delay; 0 means DefaultLatency.
	Latency time.Duration
	// Churn is the fraction of servers that leave, each replaced by a new
	// one, per minute of the measuring phase (0.1 is 10%); 0 is none.
	Churn float64
	// Duration is how long the measuring phase spreads its lookups over;
	// 0 means DefaultDuration.
	Duration time.Duration
	// Lookups is how many resolutions the measuring phase makes; 0 means
	// DefaultLookups.
	Lookups int
	// Parallel bounds joins, publishes and lookups in flight; 0 means
	// DefaultParallel.
	Parallel int
	// BootPeers is how many random servers each node is first given;
	// 0 means DefaultBootPeers.
	BootPeers int
	// Refresh has every server refresh its routing table once all have
	// joined (kad-dht runs one at start and every 10 minutes; here it is
	// off, see dhtOptions), at a cost of about a dozen lookups per server.
	Refresh bool
	// Progress receives a line every few seconds; nil is silent.
	Progress io.Writer
}

func (o *DHTOptions) fill() error {
	switch {
	case o.Servers < 2:
		return fmt.Errorf("scale dht: need at least 2 servers (got %d)", o.Servers)
	case o.Devices < 0 || o.Publishers < 0 || o.Lookups < 0 || o.Parallel < 0 || o.BootPeers < 0 || o.Latency < 0 || o.Duration < 0:
		return errors.New("scale dht: counts and durations must not be negative")
	case o.Churn < 0 || o.Churn > 1:
		return fmt.Errorf("scale dht: churn %.2f is not a fraction between 0 and 1", o.Churn)
	}
	if o.Devices == 0 {
		o.Devices = max(10, o.Servers/10)
	}
	if o.Publishers == 0 || o.Publishers > o.Devices {
		o.Publishers = o.Devices
	}
	if o.Latency == 0 {
		o.Latency = DefaultLatency
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Lookups == 0 {
		o.Lookups = DefaultLookups
	}
	if o.Parallel == 0 {
		o.Parallel = DefaultParallel
	}
	if o.BootPeers == 0 {
		o.BootPeers = DefaultBootPeers
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// DHTResult is what RunDHT measured. Times are milliseconds; rounds are the
// sequential request rounds a lookup needed to reach the server closest to
// the key (see trace).
type DHTResult struct {
	Servers int `json:"servers"`
	Devices int `json:"devices"`
	// Publishers are the devices that published a record.
	Publishers int     `json:"publishers"`
	LatencyMS  float64 `json:"link_latency_ms"`
	Churn      float64 `json:"churn_per_minute"`
	SetupS     float64 `json:"setup_s"`
	// JoinFailed servers timed out joining and are not part of the DHT.
	JoinFailed int `json:"join_failed"`

	Published     int     `json:"published"`
	PublishFailed int     `json:"publish_failed"`
	PublishMS     Summary `json:"publish_ms"`
	PublishRounds Summary `json:"publish_rounds"`

	Lookups   int     `json:"lookups"`
	Resolved  int     `json:"resolved"`
	Rounds    Summary `json:"rounds"`
	ResolveMS Summary `json:"resolve_ms"`
	Messages  Summary `json:"messages_per_lookup"`
	// WalkMS is a lookup's walk to the closest servers (GET_VALUE, whose
	// answers name closer servers and carry the record, until its last
	// answer); AfterWalkMS the rest: the trusted supernodes asked beside
	// the walk, and the ranking.
	WalkMS      Summary `json:"walk_ms"`
	AfterWalkMS Summary `json:"after_walk_ms"`
	// RefRTT is the reference measured beside each lookup: one GET_VALUE
	// from the same device to a server it is already connected to, one
	// link round trip plus the machine's scheduling delay at that moment.
	// ResolveMS.P50/RefRTT.P50 is a lookup's time in round trips, which
	// the machine's load moves far less than either figure alone.
	RefRTT Summary `json:"reference_rtt_ms"`
	// CPUSeconds is the process's CPU time during the lookups.
	CPUSeconds   float64  `json:"cpu_s_while_resolving"`
	MeasureS     float64  `json:"measure_s"`
	ServersLeft  int      `json:"servers_left"`
	ServersAdded int      `json:"servers_joined"`
	Failures     []string `json:"failures,omitempty"`

	Links  int     `json:"links"`
	HeapMB float64 `json:"heap_mb"`
	// GCPercent is the garbage collector's target the simulation ran
	// with (simulationGC): it trades memory for the CPU it measures with.
	GCPercent  int    `json:"gc_percent"`
	Goroutines int    `json:"goroutines"`
	Load       string `json:"load_average"`
}

// Success is the share of lookups that found the right record.
func (r *DHTResult) Success() float64 {
	if r.Lookups == 0 {
		return 0
	}
	return float64(r.Resolved) / float64(r.Lookups)
}

// member is one simulated node.
type member struct {
	h host.Host
	d *dht.IpfsDHT
	// handle and record of a device; empty on a server.
	handle string
	rec    []byte
}

type dhtRun struct {
	o   DHTOptions
	net *simnet
	ctx context.Context

	// mu guards servers; devices is written only before the measuring phase.
	mu      sync.Mutex
	servers []*member
	devices []*member

	joinFailed int

	phase atomic.Value // string
	done  atomic.Int64
}

// RunDHT builds a parley DHT of o.Servers servers and o.Devices clients on
// go-libp2p's mock network, every one a real libp2p host running
// discovery.NewDHT (parley's protocol prefix and handle validator), has
// each device publish a signed handle record with discovery.Publish, and
// then resolves random handles with discovery.LookupHandle from random
// devices while servers churn.
func RunDHT(ctx context.Context, o DHTOptions) (*DHTResult, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	// The network is built without latency, which would only make setup
	// longer; every link gets o.Latency before anything is measured.
	gcPercent, restoreGC := simulationGC()
	defer restoreGC()
	r := &dhtRun{o: o, net: newSimnet(0), ctx: ctx}
	defer r.close()
	res := &DHTResult{Servers: o.Servers, Devices: o.Devices, Publishers: o.Publishers, LatencyMS: ms(o.Latency), Churn: o.Churn, GCPercent: gcPercent}
	stopProgress := r.progress(time.Now())
	defer stopProgress()

	start := time.Now()
	if err := r.startServers(); err != nil {
		return res, err
	}
	if err := r.startDevices(); err != nil {
		return res, err
	}
	res.SetupS = time.Since(start).Seconds()
	res.JoinFailed = r.joinFailed
	r.net.setLatency(o.Latency)
	r.publish(res)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	r.measure(res)
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	res.HeapMB = float64(m.HeapInuse) / (1 << 20)
	res.Goroutines = runtime.NumGoroutine()
	res.Links = r.net.linkCount()
	res.Load = loadAverage()
	return res, ctx.Err()
}

func (r *dhtRun) progress(start time.Time) func() {
	r.phase.Store("starting")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				fmt.Fprintf(r.o.Progress, "scale dht: %s %d done, %s, heap %.0f MB, %d goroutines, load %s\n",
					r.phase.Load(), r.done.Load(), time.Since(start).Round(time.Second), float64(m.HeapInuse)/(1<<20), runtime.NumGoroutine(), loadAverage())
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

func (r *dhtRun) setPhase(p string) {
	r.phase.Store(p)
	r.done.Store(0)
	fmt.Fprintf(r.o.Progress, "scale dht: %s\n", p)
}

// bootPeers picks n random live servers.
func (r *dhtRun) bootPeers(n int) []peer.AddrInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []peer.AddrInfo
	for _, i := range mrand.Perm(len(r.servers)) {
		if len(out) == n {
			break
		}
		s := r.servers[i]
		out = append(out, peer.AddrInfo{ID: s.h.ID(), Addrs: s.h.Addrs()})
	}
	return out
}

// dhtOptions open a stream per DHT request (streamPerRequest: kad-dht's
// sender keeps one open per peer, three goroutines each on the mock
// network) and turn kad-dht's automatic routing-table refresh off: at start
// it runs a lookup per bucket on every node, which for thousands of nodes
// joining at once costs more CPU than the whole measurement. A server
// joins instead as Kademlia describes (a lookup of its own ID), and with
// o.Refresh every server runs one refresh once all have joined.
func (r *dhtRun) dhtOptions() []dht.Option {
	return []dht.Option{dht.DisableAutoRefresh(), dht.WithCustomMessageSender(newStreamPerRequest)}
}

// newServer starts a DHT server and joins it: connect to its boot peers,
// then look its own ID up, as a Kademlia node joins.
func (r *dhtRun) newServer(boot []peer.AddrInfo) (*member, error) {
	h, err := r.net.newHost()
	if err != nil {
		return nil, err
	}
	d, err := discovery.NewDHT(r.ctx, h, discovery.DHTConfig{Server: true, Bootstrap: boot, Options: r.dhtOptions()})
	if err != nil {
		h.Close()
		return nil, err
	}
	m := &member{h: h, d: d}
	if len(boot) == 0 {
		return m, nil
	}
	if err := r.join(m, boot); err != nil {
		m.close(r.net)
		return nil, err
	}
	return m, nil
}

func (r *dhtRun) join(m *member, boot []peer.AddrInfo) error {
	// Generous: on a loaded machine a join waits for CPU, not the network.
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	if _, err := discovery.Bootstrap(ctx, m.h, boot, time.Minute); err != nil {
		return err
	}
	if err := discovery.WaitRoutable(ctx, m.d); err != nil {
		return err
	}
	_, err := m.d.GetClosestPeers(ctx, string(m.h.ID()))
	return err
}

func (m *member) close(n *simnet) {
	m.d.Close()
	n.leave(m.h)
}

// parallel runs f(0..n-1) with at most o.Parallel in flight and returns the
// first error.
func (r *dhtRun) parallel(n int, f func(i int) error) error {
	sem := make(chan struct{}, r.o.Parallel)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < n && r.ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				once.Do(func() { first = err })
			}
			r.done.Add(1)
		}(i)
	}
	wg.Wait()
	if first == nil {
		first = r.ctx.Err()
	}
	return first
}

func (r *dhtRun) startServers() error {
	r.setPhase(fmt.Sprintf("joining %d servers", r.o.Servers))
	first, err := r.newServer(nil)
	if err != nil {
		return err
	}
	r.servers = append(r.servers, first)
	// The first few join one by one so later ones find several to boot from.
	seed := min(r.o.Servers-1, r.o.BootPeers*2)
	for i := 0; i < seed; i++ {
		m, err := r.newServer(r.bootPeers(r.o.BootPeers))
		if err != nil {
			return fmt.Errorf("server %d joins: %w", i+1, err)
		}
		r.servers = append(r.servers, m)
	}
	var failed atomic.Int64
	err = r.parallel(r.o.Servers-1-seed, func(i int) error {
		m, err := r.newServer(r.bootPeers(r.o.BootPeers))
		if err != nil {
			// A join that times out on an overloaded machine is reported,
			// not fatal: the run measures the servers that did join.
			if failed.Add(1) > int64(r.o.Servers/10) {
				return fmt.Errorf("more than 10%% of servers failed to join, the last: %w", err)
			}
			fmt.Fprintf(r.o.Progress, "scale dht: a server did not join: %v\n", err)
			return nil
		}
		r.mu.Lock()
		r.servers = append(r.servers, m)
		r.mu.Unlock()
		return nil
	})
	r.joinFailed = int(failed.Load())
	if err != nil || !r.o.Refresh {
		return err
	}
	r.setPhase(fmt.Sprintf("refreshing %d servers' routing tables", r.o.Servers))
	return r.parallel(len(r.servers), func(i int) error {
		select {
		case <-r.servers[i].d.RefreshRoutingTable():
		case <-r.ctx.Done():
		}
		return nil // a bucket nobody fills is not an error
	})
}

func (r *dhtRun) startDevices() error {
	r.setPhase(fmt.Sprintf("starting %d devices", r.o.Devices))
	r.devices = make([]*member, r.o.Devices)
	return r.parallel(r.o.Devices, func(i int) error {
		h, err := r.net.newHost()
		if err != nil {
			return err
		}
		boot := r.bootPeers(r.o.BootPeers)
		d, err := discovery.NewDHT(r.ctx, h, discovery.DHTConfig{Bootstrap: boot, Options: r.dhtOptions()})
		if err != nil {
			h.Close()
			return err
		}
		m := &member{h: h, d: d, handle: fmt.Sprintf("dev%06d", i)}
		r.devices[i] = m
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		defer cancel()
		if _, err := discovery.Bootstrap(ctx, h, boot, 30*time.Second); err != nil {
			return fmt.Errorf("device %s: %w", m.handle, err)
		}
		if err := discovery.WaitRoutable(ctx, d); err != nil {
			return fmt.Errorf("device %s: %w", m.handle, err)
		}
		m.rec, err = deviceRecord(m.handle, h.ID(), time.Now())
		return err
	})
}

// deviceRecord is a signed handle record of a one-device account.
func deviceRecord(handle string, id peer.ID, now time.Time) ([]byte, error) {
	_, acct, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	box := make([]byte, 32)
	rand.Read(box)
	rec := discovery.HandleRecord{V: 1, Handle: handle, Seq: 1,
		Devices: []discovery.Device{{PeerID: id.String(), BoxKey: box}},
		Claimed: now.UnixMilli(), Expires: now.Add(24 * time.Hour).Unix()}
	if err := rec.Sign(acct); err != nil {
		return nil, err
	}
	return rec.Marshal()
}

func (r *dhtRun) publish(res *DHTResult) {
	r.setPhase(fmt.Sprintf("publishing %d handle records", r.o.Publishers))
	var mu sync.Mutex
	var times, rounds Dist
	r.parallel(r.o.Publishers, func(i int) error {
		m := r.devices[i]
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		defer cancel()
		start := time.Now()
		tr, err := traced(ctx, discovery.HandleKey(m.handle), func(ctx context.Context) error {
			return discovery.Publish(ctx, m.d, m.rec)
		})
		took := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.PublishFailed++
			if len(res.Failures) < 10 {
				res.Failures = append(res.Failures, "publish "+m.handle+": "+err.Error())
			}
			return nil
		}
		res.Published++
		times = append(times, ms(took))
		rounds = append(rounds, float64(tr.rounds))
		return nil
	})
	res.PublishMS, res.PublishRounds = times.Summarise(), rounds.Summarise()
}

// measure resolves o.Lookups random handles from random devices, spread
// over o.Duration, while servers churn.
func (r *dhtRun) measure(res *DHTResult) {
	r.setPhase(fmt.Sprintf("resolving %d handles over %s, churn %.0f%% of servers a minute", r.o.Lookups, r.o.Duration, r.o.Churn*100))
	churnStop := make(chan struct{})
	var churnWG sync.WaitGroup
	if r.o.Churn > 0 {
		churnWG.Add(1)
		go func() {
			defer churnWG.Done()
			r.churn(res, churnStop)
		}()
	}
	var mu sync.Mutex
	var times, rounds, msgs, refs, walks, after Dist
	start := time.Now()
	cpu0 := cpuSeconds()
	gap := r.o.Duration / time.Duration(r.o.Lookups)
	sem := make(chan struct{}, r.o.Parallel)
	var wg sync.WaitGroup
	for i := 0; i < r.o.Lookups && r.ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * gap)); d > 0 {
			select {
			case <-time.After(d):
			case <-r.ctx.Done():
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		from := r.devices[mrand.IntN(len(r.devices))]
		to := r.devices[mrand.IntN(r.o.Publishers)]
		go func() {
			defer func() { <-sem; wg.Done() }()
			ref, refErr := referenceRTT(r.ctx, from)
			took, tr, err := resolveDevice(r.ctx, from, to)
			r.done.Add(1)
			mu.Lock()
			defer mu.Unlock()
			res.Lookups++
			if refErr == nil {
				refs = append(refs, ms(ref))
			}
			if err != nil {
				if len(res.Failures) < 10 {
					res.Failures = append(res.Failures, err.Error())
				}
				return
			}
			res.Resolved++
			times = append(times, ms(took))
			rounds = append(rounds, float64(tr.rounds))
			msgs = append(msgs, float64(tr.queries))
			walks = append(walks, ms(tr.walk))
			after = append(after, ms(took-tr.walk))
		}()
	}
	wg.Wait()
	res.MeasureS = time.Since(start).Seconds()
	res.CPUSeconds = cpuSeconds() - cpu0
	res.RefRTT = refs.Summarise()
	close(churnStop)
	churnWG.Wait()
	res.ResolveMS, res.Rounds, res.Messages = times.Summarise(), rounds.Summarise(), msgs.Summarise()
	res.WalkMS, res.AfterWalkMS = walks.Summarise(), after.Summarise()
}

// resolveDevice resolves to's handle from from and checks the answer names
// to's device.
func resolveDevice(ctx context.Context, from, to *member) (time.Duration, trace, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var l *discovery.Lookup
	start := time.Now()
	tr, err := traced(ctx, discovery.HandleKey(to.handle), func(ctx context.Context) error {
		var err error
		l, err = discovery.LookupHandle(ctx, from.d, to.handle)
		return err
	})
	took := time.Since(start)
	switch {
	case err != nil:
		return took, tr, fmt.Errorf("resolve %s: %w", to.handle, err)
	case l.Best.Handle != to.handle || !l.Best.HasDevice(to.h.ID()):
		return took, tr, fmt.Errorf("resolve %s: wrong record", to.handle)
	}
	return took, tr, nil
}

// referenceRTT times one GET_VALUE from m to a server it is connected to.
func referenceRTT(ctx context.Context, m *member) (time.Duration, error) {
	for _, p := range m.d.RoutingTable().ListPeers() {
		if m.h.Network().Connectedness(p) != network.Connected {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := discovery.KadRequest(ctx, m.h, p, pb.NewMessage(pb.Message_GET_VALUE, []byte(discovery.HandleKey("reference")), 0))
		return time.Since(start), err
	}
	return 0, errors.New("no connected server")
}

// cpuSeconds is the process's user and system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// churn replaces a random server by a new one at the rate o.Churn asks;
// the new one joins in the background, so a slow join does not slow the
// rate at which servers leave.
func (r *dhtRun) churn(res *DHTResult, stop <-chan struct{}) {
	every := time.Duration(float64(time.Minute) / (r.o.Churn * float64(r.o.Servers)))
	t := time.NewTicker(every)
	defer t.Stop()
	var wg sync.WaitGroup
	var joined atomic.Int64
	defer func() { wg.Wait(); res.ServersAdded = int(joined.Load()) }()
	for {
		select {
		case <-stop:
			return
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		i := mrand.IntN(len(r.servers))
		gone := r.servers[i]
		r.servers[i] = r.servers[len(r.servers)-1]
		r.servers = r.servers[:len(r.servers)-1]
		r.mu.Unlock()
		gone.close(r.net)
		res.ServersLeft++
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := r.newServer(r.bootPeers(r.o.BootPeers))
			if err != nil {
				fmt.Fprintf(r.o.Progress, "scale dht: a new server did not join: %v\n", err)
				return
			}
			r.mu.Lock()
			r.servers = append(r.servers, m)
			r.mu.Unlock()
			joined.Add(1)
		}()
	}
}

func (r *dhtRun) close() {
	r.setPhase("closing")
	all := append(append([]*member(nil), r.servers...), r.devices...)
	var wg sync.WaitGroup
	for _, m := range all {
		if m == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); m.d.Close(); m.h.Close() }()
	}
	wg.Wait()
	r.net.close()
}

// trace is what one DHT operation's query events showed.
type trace struct {
	// rounds is the depth of the closest server that answered: 1 when it
	// was in the asker's routing table, 2 when a server named it in its
	// first answer, and so on.
	rounds int
	// queries is how many requests the walk sent.
	queries int
	// walk is the time from the start to the walk's last answer; what
	// the operation took beyond it is the requests after the walk (a
	// publish's PUT_VALUE round).
	walk time.Duration
}

// traced runs f with kad-dht's query events recorded for key.
func traced(ctx context.Context, key string, f func(ctx context.Context) error) (trace, error) {
	ctx, cancel := context.WithCancel(ctx)
	ectx, events := routing.RegisterForQueryEvents(ctx)
	done := make(chan trace, 1)
	start := time.Now()
	go func() {
		depth := map[peer.ID]int{}
		var tr trace
		var closest peer.ID
		for ev := range events {
			switch ev.Type {
			case routing.SendingQuery:
				tr.queries++
				if depth[ev.ID] == 0 {
					depth[ev.ID] = 1
				}
			case routing.PeerResponse:
				tr.walk = time.Since(start)
				for _, p := range ev.Responses {
					if depth[p.ID] == 0 {
						depth[p.ID] = depth[ev.ID] + 1
					}
				}
				if closest == "" || kb.Closer(ev.ID, closest, key) {
					closest = ev.ID
				}
			}
		}
		tr.rounds = depth[closest]
		done <- tr
	}()
	err := f(ectx)
	cancel()
	return <-done, err
}

func publishOne(ctx context.Context, m *member) error {
	return discovery.Publish(ctx, m.d, m.rec)
}

// WriteTable prints r for a person.
func (r *DHTResult) WriteTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, `servers | devices | link | churn/min | success | rounds p50/p95 | resolve p50/p95 | reference RTT p50 | resolve p50/p95 in RTTs | requests/lookup p50 | publish p50/p95 | publish rounds p50/p95
%d | %d | %s | %.0f%% (%d left, %d joined) | %d/%d (%.1f%%) | %.0f/%.0f | %s / %s | %s | %.1f / %.1f | %.0f | %s / %s | %.0f/%.0f
resolve = walk p50 %s (%.1f reference RTTs) + after the walk p50 %s (%.1f reference RTTs)
setup %.0f s, lookups over %.0f s using %.0f CPU-s; %d links, heap %.0f MB (%.0f KB per node, GOGC %d), %d goroutines; load average %s
`,
		r.Servers, r.Devices, fmtMS(r.LatencyMS), r.Churn*100, r.ServersLeft, r.ServersAdded,
		r.Resolved, r.Lookups, 100*r.Success(), r.Rounds.P50, r.Rounds.P95,
		fmtMS(r.ResolveMS.P50), fmtMS(r.ResolveMS.P95), fmtMS(r.RefRTT.P50), r.ResolveMS.P50/max(r.RefRTT.P50, 1e-9), r.ResolveMS.P95/max(r.RefRTT.P50, 1e-9), r.Messages.P50,
		fmtMS(r.PublishMS.P50), fmtMS(r.PublishMS.P95), r.PublishRounds.P50, r.PublishRounds.P95,
		fmtMS(r.WalkMS.P50), r.WalkMS.P50/max(r.RefRTT.P50, 1e-9), fmtMS(r.AfterWalkMS.P50), r.AfterWalkMS.P50/max(r.RefRTT.P50, 1e-9),
		r.SetupS, r.MeasureS, r.CPUSeconds, r.Links, r.HeapMB, r.HeapMB*1024/float64(r.Servers+r.Devices), r.GCPercent, r.Goroutines, r.Load)
	for _, f := range r.Failures {
		if err == nil {
			_, err = fmt.Fprintf(w, "failure: %s\n", f)
		}
	}
	return err
}
