// Package lab runs parley scenarios for people who want to see or measure
// the system. This package is the embedded demo (`parley demo`: supernodes
// and several nodes in one process on 127.0.0.1); its sub-packages are the
// labs of real NATs in network namespaces: lab/netlab builds them,
// lab/natlab calls between NAT types (`parley lab nat`), lab/outage kills
// supernodes and relays under a workload (`parley lab outage`). lab builds
// on node and supernode, never the other way round (internal/deptest), and
// never reaches outside the loopback interface or the namespaces it creates.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/supernode"
	"github.com/parley-net/parley/supernode/mailboxserver"
)

// DemoOptions configures RunDemo.
type DemoOptions struct {
	// Transcript receives the human-readable account; nil discards it.
	Transcript io.Writer
	// Messages each way; 0 means 10.
	Messages int
	// Dir is where the nodes' homes go; "" means a new temporary directory,
	// removed afterwards.
	Dir string
	// Logger receives component logs; nil discards them.
	Logger *slog.Logger
	// Browser adds the browser part (demobrowser.go): headless Chromium
	// in alice's web app calls and is called. false leaves it out.
	Browser bool
}

// DemoReport is the demo's summary; its JSON form is what `parley demo
// --json` prints.
type DemoReport struct {
	OK        bool           `json:"ok"`
	Nodes     int            `json:"nodes"`
	ResolveMS float64        `json:"resolve_ms"`
	Chat      ChatReport     `json:"chat"`
	Call      *CallReport    `json:"call,omitempty"`
	Offline   *OfflineReport `json:"offline,omitempty"`
	Browser   *BrowserReport `json:"browser,omitempty"`
	Error     string         `json:"error,omitempty"`
}

// CallReport sums up the demo's call.
type CallReport struct {
	SetupMS           float64 `json:"setup_ms"`
	Path              string  `json:"path"`      // tier: "direct", "supernode" or "cloud"
	Candidate         string  `json:"candidate"` // ICE candidate type of the pair's less direct end
	RTTMS             float64 `json:"rtt_ms"`
	JitterMS          float64 `json:"jitter_ms"`
	LossPct           float64 `json:"loss_pct"`
	MOS               float64 `json:"mos"`
	AudioCorrelation  float64 `json:"audio_correlation"` // segment-aligned (media.SegmentCorrelation)
	WholeCorrelation  float64 `json:"whole_correlation"` // one alignment of the whole
	DevicesRang       int     `json:"devices_rang"`
	AnsweredElsewhere bool    `json:"answered_elsewhere"`
}

// The demo call must reach these on loopback.
const (
	minCorrelation = 0.9
	minMOS         = 4.0
	demoCallAudio  = 5 * time.Second
)

// ChatReport counts the demo's chat messages.
type ChatReport struct {
	Sent       int     `json:"sent"`
	Delivered  int     `json:"delivered"`
	Duplicates int     `json:"duplicates"`
	Lost       int     `json:"lost"`
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
}

var loopback = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// loopbackMedia keeps the demo's calls on 127.0.0.1.
var loopbackMedia = media.Config{IncludeLoopback: true, IPFilter: func(ip net.IP) bool { return ip.IsLoopback() }}

// RunDemo starts a supernode and two nodes (alice, bob) on 127.0.0.1,
// resolves bob through the DHT and exchanges messages both ways. The report
// is filled in as far as the demo got, also when it returns an error.
func RunDemo(ctx context.Context, opt DemoOptions) (*DemoReport, error) {
	if opt.Messages == 0 {
		opt.Messages = 10
	}
	out := opt.Transcript
	if out == nil {
		out = io.Discard
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := opt.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "parley-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	rep := &DemoReport{}
	err := runDemo(ctx, opt, dir, out, log, rep)
	if err == nil {
		err = rep.check()
	}
	rep.OK = err == nil
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

// check says what falls short of a good demo.
func (r *DemoReport) check() error {
	c := r.Chat
	if c.Lost != 0 || c.Duplicates != 0 || c.Delivered != c.Sent {
		return fmt.Errorf("demo: %d of %d messages delivered, %d duplicates", c.Delivered, c.Sent, c.Duplicates)
	}
	if o := r.Offline; o != nil {
		if o.Lost != 0 || o.Duplicates != 0 || o.Delivered != o.Sent || !o.HistoriesIdentical {
			return fmt.Errorf("demo offline: %d of %d delivered, %d duplicates, histories identical %v", o.Delivered, o.Sent, o.Duplicates, o.HistoriesIdentical)
		}
	}
	if k := r.Call; k != nil {
		switch {
		case k.AudioCorrelation < minCorrelation:
			return fmt.Errorf("demo call: audio correlation %.3f below %.1f", k.AudioCorrelation, minCorrelation)
		case k.MOS < minMOS:
			return fmt.Errorf("demo call: MOS %.2f below %.1f", k.MOS, minMOS)
		case k.DevicesRang != 2 || !k.AnsweredElsewhere:
			return fmt.Errorf("demo call: %d devices rang, answered elsewhere %v", k.DevicesRang, k.AnsweredElsewhere)
		}
	}
	return nil
}

// runDemo builds the demo's network (supernodes, alice, bob's laptop and
// phone) and runs its acts in order, filling rep.
// Long because it is the demo's script: the acts read top to bottom in the
// order a viewer sees them, each a few lines around a call of its own.
func runDemo(ctx context.Context, opt DemoOptions, dir string, out io.Writer, log *slog.Logger, rep *DemoReport) error {
	// Four supernodes: each account's mail lives on the three closest to it,
	// so one is left to take over when holders die.
	sns := make([]*supernode.Supernode, demoSupernodes)
	defer func() {
		for _, s := range sns {
			if s != nil {
				s.Close()
			}
		}
	}()
	var boot []peer.AddrInfo
	for i := range sns {
		s, err := supernode.New(ctx, supernode.Config{Home: fmt.Sprintf("%s/supernode%d", dir, i), Listen: loopback, Bootstrap: boot,
			Logger: log.With("role", fmt.Sprintf("supernode%d", i)), Mailbox: mailboxserver.Config{ReplicateInterval: 500 * time.Millisecond}})
		if err != nil {
			return err
		}
		sns[i] = s
		boot = append(boot, s.AddrInfo())
		rep.Nodes++
		fmt.Fprintf(out, "supernode%d %s\n", i, s.Addrs()[0])
	}

	// bob has two devices: his laptop holds the account key and signs the
	// phone into his handle record before either goes online.
	for _, h := range []string{"alice", "bob"} {
		if _, err := node.InitIdentity(dir+"/"+h, h, h+"-laptop", time.Now()); err != nil {
			return err
		}
	}
	if err := linkDevice(dir+"/bob", dir+"/bob-phone", "bob-phone"); err != nil {
		return err
	}
	start := func(home, label string) (*node.Node, error) {
		n, err := node.Start(ctx, node.Config{Home: dir + "/" + home, Listen: loopback, Bootstrap: boot,
			RetryInterval: 200 * time.Millisecond, FetchInterval: time.Second, DeliveryTimeout: 3 * time.Second,
			Media: loopbackMedia, Logger: log.With("role", label)})
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", label, err)
		}
		rep.Nodes++
		fmt.Fprintf(out, "%-10s %s  fingerprint %s\n", label, n.ID(), n.Identity().Fingerprint())
		return n, nil
	}
	alice, err := start("alice", "alice")
	if err != nil {
		return err
	}
	defer alice.Close()
	bob, err := start("bob", "bob")
	if err != nil {
		return err
	}
	defer bob.Close()
	phone, err := start("bob-phone", "bob-phone")
	if err != nil {
		return err
	}
	defer phone.Close()

	who, err := alice.Resolve(ctx, "bob")
	if err != nil {
		return fmt.Errorf("alice resolves bob: %w", err)
	}
	rep.ResolveMS = round(who.LookupMS)
	fmt.Fprintf(out, "\nalice resolved bob through the DHT in %.1f ms: %d device(s), fingerprint %s\n\n", who.LookupMS, len(who.Devices), who.Fingerprint)

	if err := chatBothWays(ctx, out, alice, bob, opt.Messages, rep); err != nil {
		return err
	}
	rep.Call = &CallReport{}
	if err := demoCall(ctx, out, dir, alice, bob, phone, rep.Call); err != nil {
		return err
	}
	if opt.Browser {
		rep.Browser = &BrowserReport{}
		if err := demoBrowser(ctx, out, dir, alice, bob, rep.Browser); err != nil {
			return err
		}
	}
	rep.Offline = &OfflineReport{}
	restart := func() (*node.Node, error) {
		n, err := start("bob-phone", "bob-phone")
		if err == nil {
			phone = n
			rep.Nodes-- // the same device again
		}
		return n, err
	}
	defer func() { phone.Close() }()
	return demoOffline(ctx, out, sns, alice, bob, phone, restart, rep.Offline)
}

func linkDevice(primaryHome, home, name string) error {
	prim, err := node.LoadIdentity(primaryHome)
	if err != nil {
		return err
	}
	dev, err := node.JoinIdentity(home, name)
	if err != nil {
		return err
	}
	rec, err := prim.AddDevice(dev.Self(), time.Now())
	if err != nil {
		return err
	}
	return dev.AdoptRecord(rec)
}

// chatBothWays sends n messages each way, alternating, and waits for every
// one to arrive.
// Long because the exchange is one story (send, wait, check order, report)
// whose steps share the two nodes' event streams.
func chatBothWays(ctx context.Context, out io.Writer, a, b *node.Node, n int, rep *DemoReport) error {
	type sent struct {
		id       string
		at       time.Time
		from, to string
		body     string
	}
	var mu sync.Mutex
	arrivals := map[string][]time.Time{}
	allIn := make(chan struct{})
	watch := func(nd *node.Node) func() {
		ch, stop := nd.Subscribe()
		go func() {
			for e := range ch {
				if e.Type != "message" {
					continue
				}
				mu.Lock()
				arrivals[e.Message.ID] = append(arrivals[e.Message.ID], time.Now())
				if len(arrivals) == 2*n && len(arrivals[e.Message.ID]) == 1 {
					close(allIn)
				}
				mu.Unlock()
			}
		}()
		return stop
	}
	defer watch(a)()
	defer watch(b)()

	lines := []string{"hi bob", "hi alice", "how are you?", "fine, you?", "see you at 5", "ok"}
	var log []sent
	for i := 0; i < n; i++ {
		for k, pair := range [][2]*node.Node{{a, b}, {b, a}} {
			from, to := pair[0], pair[1]
			body := fmt.Sprintf("%s (%d)", lines[(2*i+k)%len(lines)], i+1)
			t0 := time.Now()
			res, err := from.Send(ctx, to.Identity().Handle(), body)
			if err != nil {
				return fmt.Errorf("%s sends: %w", from.Identity().Handle(), err)
			}
			log = append(log, sent{id: res.Message.ID, at: t0, from: from.Identity().Handle(), to: to.Identity().Handle(), body: body})
			rep.Chat.Sent++
		}
	}
	select {
	case <-allIn:
	case <-time.After(15 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []float64
	for _, s := range log {
		got := arrivals[s.id]
		if len(got) == 0 {
			rep.Chat.Lost++
			fmt.Fprintf(out, "  %-5s → %-5s  %-22q LOST\n", s.from, s.to, s.body)
			continue
		}
		rep.Chat.Delivered++
		rep.Chat.Duplicates += len(got) - 1
		ms := float64(got[0].Sub(s.at).Microseconds()) / 1000
		lat = append(lat, ms)
		fmt.Fprintf(out, "  %-5s → %-5s  %-22q %6.1f ms\n", s.from, s.to, s.body, ms)
	}
	// The store is the final word: each side holds every message exactly once.
	ha, err := a.History(ctx, b.Identity().Handle(), 0)
	if err != nil {
		return err
	}
	hb, err := b.History(ctx, a.Identity().Handle(), 0)
	if err != nil {
		return err
	}
	if len(ha) != rep.Chat.Sent || len(hb) != rep.Chat.Sent {
		return fmt.Errorf("histories hold %d and %d messages, %d were sent", len(ha), len(hb), rep.Chat.Sent)
	}
	for i := range ha {
		if ha[i].ID != hb[i].ID {
			return errors.New("alice and bob see the conversation in different orders")
		}
	}
	rep.Chat.P50MS, rep.Chat.P95MS = round(percentile(lat, 50)), round(percentile(lat, 95))
	fmt.Fprintf(out, "\nchat: %d sent, %d delivered, %d lost, %d duplicates; latency p50 %.1f ms, p95 %.1f ms; histories identical\n",
		rep.Chat.Sent, rep.Chat.Delivered, rep.Chat.Lost, rep.Chat.Duplicates, rep.Chat.P50MS, rep.Chat.P95MS)
	return nil
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(float64(len(s)-1)*p/100 + 0.5)
	return s[i]
}

func round(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }
