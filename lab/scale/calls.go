package scale

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/cloudrelay"
	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/supernode"
)

// DefaultCallLevels are the numbers of simultaneous calls RunCalls tries,
// in order, until one level has a call heard below the MOS floor.
var DefaultCallLevels = []int{1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64}

// Defaults of CallsOptions.
const (
	DefaultCallAudio  = 10 * time.Second
	DefaultCallBudget = 8 * time.Minute
	DefaultMinMOS     = 4.0
	// callSetupTimeout bounds a level's calls reaching audio at both ends.
	callSetupTimeout = 45 * time.Second
	// callMaxLag bounds the correlation's search for the delay between a
	// source starting and its first frame heard (a few frames, more on a
	// loaded machine); the speech-like signal repeats its patterns, so a
	// wider search finds false peaks in a short recording.
	callMaxLag = 2 * media.SampleRate
	// idleWindow is how long the rig's CPU is measured before a level's
	// calls.
	idleWindow = 2 * time.Second
)

// CallsOptions configure RunCalls. Zero values mean the defaults named.
type CallsOptions struct {
	// Levels are the numbers of calls at once to try, increasing; nil
	// means DefaultCallLevels.
	Levels []int
	// Audio is how long each level's calls are measured once all of them
	// carry audio both ways; 0 means DefaultCallAudio.
	Audio time.Duration
	// Relay forces both ends of every call through one TURN relay:
	// node.PathSupernode (the supernode's) or node.PathCloud (a cloud
	// relay, `parley relay`); "" lets the calls go direct.
	Relay string
	// MinMOS is the floor a call's two ends must both hear; 0 means
	// DefaultMinMOS.
	MinMOS float64
	// Budget: no level starts after it has passed; 0 means
	// DefaultCallBudget, which with a level's at most 45 s of setup, its
	// window and its judging keeps a run within ten minutes.
	Budget time.Duration
	// Progress receives a line per step; nil is silent.
	Progress io.Writer
}

// CallsResult is what RunCalls measured.
type CallsResult struct {
	Relay  string  `json:"relay"` // "direct", "supernode" or "cloud"
	MinMOS float64 `json:"min_mos"`
	// Carried is the largest level at which every call connected and both
	// of its ends heard MOS ≥ MinMOS (0: not even one call).
	Carried int          `json:"carried"`
	Levels  []CallsLevel `json:"levels"`
	Stopped string       `json:"stopped"` // why no larger level ran
	CPUs    int          `json:"cpus"`
}

// CallsLevel is one level: Calls calls at once between 2×Calls nodes.
type CallsLevel struct {
	Calls int `json:"calls"`
	// Connected calls carried audio both ways; Good ones were heard at
	// MOS ≥ MinMOS at both ends.
	Connected int `json:"connected"`
	Good      int `json:"good"`
	// MOS of what each end heard over the window (see endHeard): the
	// lowest and the median over all ends.
	MinMOS float64 `json:"min_mos"`
	P50MOS float64 `json:"p50_mos"`
	// HeardLossPct is the share of the window an end did not hear the
	// peer's audio (concealed, or no frame played at all because playout
	// fell behind): the mean and the worst end.
	HeardLossPct      float64 `json:"heard_loss_pct"`
	WorstHeardLossPct float64 `json:"worst_heard_loss_pct"`
	// GapPct is the part of HeardLossPct (mean over ends) that was no
	// frame played at all: the process fell behind real time.
	GapPct float64 `json:"gap_pct"`
	// MinCorrelation is the lowest segment correlation (see
	// media.SegmentCorrelation) of what an end recorded against what the
	// peer sent: about 1 when the audio arrived intact.
	MinCorrelation float64 `json:"min_correlation"`
	// Tiers counts the calls by the tier that carried them, as their
	// callers saw it.
	Tiers map[string]int `json:"tiers"`
	// SetupS is how long the level took to have every call carry audio.
	SetupS float64 `json:"setup_s"`
	// CPUMSPerS is this process's CPU over the window (both ends of every
	// call, the supernode, the relay), ms per second: 1000 is one core.
	CPUMSPerS float64 `json:"cpu_ms_per_s"`
	// IdleCPUMSPerS is the same over 2 s just before the calls: the
	// nodes, the supernode and the relay with no call.
	IdleCPUMSPerS float64 `json:"idle_cpu_ms_per_s"`
	// CallCPUMSPerS is (CPUMSPerS − IdleCPUMSPerS) / Calls: one call, both
	// ends.
	CallCPUMSPerS float64  `json:"call_cpu_ms_per_s"`
	Load          string   `json:"load_average"`
	Errors        []string `json:"errors,omitempty"`
}

// RunCalls places increasing numbers of simultaneous calls between real
// nodes (each its own libp2p host, media on 127.0.0.1) bootstrapped from
// one supernode, all in this process, and finds the largest number whose
// calls are all heard at MOS ≥ MinMOS by both ends. Each level's calls
// carry speech-like audio both ways; the MOS of an end is computed from
// what its sink actually received over the window.
func RunCalls(ctx context.Context, o CallsOptions) (*CallsResult, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	start := time.Now()
	r, err := newCallsRig(ctx, o)
	if err != nil {
		return nil, err
	}
	defer r.close()
	res := &CallsResult{Relay: r.tier, MinMOS: o.MinMOS, CPUs: runtime.NumCPU(), Stopped: "every level ran"}
	for _, n := range o.Levels {
		if time.Since(start) > o.Budget {
			res.Stopped = fmt.Sprintf("the %s budget was spent", o.Budget)
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		r.progress("level %d: starting %d nodes in all (load %s)", n, 2*n, loadAverage())
		if err := r.grow(ctx, n); err != nil {
			return res, err
		}
		lv := r.level(ctx, n)
		res.Levels = append(res.Levels, lv)
		r.progress("level %d: %d connected, %d at MOS ≥ %.1f; MOS min %.2f p50 %.2f; heard loss mean %.2f%% (no frame played %.2f%%) worst %.2f%%; correlation min %.3f; CPU %.0f ms/s (idle %.0f, %.1f per call); load %s",
			n, lv.Connected, lv.Good, o.MinMOS, lv.MinMOS, lv.P50MOS, lv.HeardLossPct, lv.GapPct, lv.WorstHeardLossPct, lv.MinCorrelation, lv.CPUMSPerS, lv.IdleCPUMSPerS, lv.CallCPUMSPerS, lv.Load)
		for _, e := range lv.Errors {
			r.progress("level %d: %s", n, e)
		}
		if lv.Good < n {
			res.Stopped = fmt.Sprintf("at %d calls, %d were not heard at MOS ≥ %.1f by both ends", n, n-lv.Good, o.MinMOS)
			break
		}
		res.Carried = n
	}
	return res, nil
}

func (o *CallsOptions) normalize() error {
	if o.Levels == nil {
		o.Levels = DefaultCallLevels
	}
	for i, n := range o.Levels {
		if n <= 0 || (i > 0 && n <= o.Levels[i-1]) {
			return fmt.Errorf("call levels must be positive and increasing: %v", o.Levels)
		}
	}
	if o.Audio == 0 {
		o.Audio = DefaultCallAudio
	}
	if o.Audio < time.Second {
		return fmt.Errorf("call audio %s: at least 1s", o.Audio)
	}
	if o.MinMOS == 0 {
		o.MinMOS = DefaultMinMOS
	}
	if o.Budget == 0 {
		o.Budget = DefaultCallBudget
	}
	switch o.Relay {
	case "", node.PathSupernode, node.PathCloud:
	default:
		return fmt.Errorf("relay %q: want %q, %q or none", o.Relay, node.PathSupernode, node.PathCloud)
	}
	return nil
}

// callsRig is the supernode, the optional cloud relay and the pairs of
// nodes, grown level by level.
type callsRig struct {
	o     CallsOptions
	tier  string
	dir   string
	log   *slog.Logger
	sn    *supernode.Supernode
	cloud *cloudrelay.Relay
	pairs []*callPair
}

// callPair is a caller and the callee it calls.
type callPair struct {
	i              int
	caller, callee *node.Node
	mu             sync.Mutex
	calleeSink     *media.CaptureSink // the sink the callee answers the next call with
}

func (p *callPair) callerSeed() uint64 { return uint64(1000 + p.i) }
func (p *callPair) calleeSeed() uint64 { return uint64(2000 + p.i) }
func (p *callPair) calleeHandle() string {
	return fmt.Sprintf("callee%d", p.i)
}

func newCallsRig(ctx context.Context, o CallsOptions) (*callsRig, error) {
	dir, err := os.MkdirTemp("", "parley-scale-calls-")
	if err != nil {
		return nil, err
	}
	r := &callsRig{o: o, tier: node.TierDirect, dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if o.Relay != "" {
		r.tier = o.Relay
	}
	// A TURN server relaying between addresses of its own host: every
	// node is on 127.0.0.1, hence AllowOwnAddrs, and no per-IP cap (-1):
	// the cap of 20 allocations an address protects a relay from one
	// host, and here every device is one host (it stopped the supernode
	// run at 6 calls, 24 allocations, with CPU to spare).
	turn := func(ip string) turnrelay.Config {
		return turnrelay.Config{UDPAddr: ip + ":0", TCPAddr: ip + ":0", RelayIPs: []netip.Addr{netip.MustParseAddr(ip)},
			AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, AllowOwnAddrs: true, MaxAllocationsPerIP: -1}
	}
	snTURN := turn("127.0.0.1")
	r.sn, err = supernode.New(ctx, supernode.Config{Home: dir + "/supernode", Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger: r.log, TURN: &snTURN})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("supernode: %w", err)
	}
	if o.Relay == node.PathCloud {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			r.close()
			return nil, err
		}
		cfg := cloudrelay.Config{TURN: turn("127.0.0.2"), Key: key, Listen: []string{"/ip4/127.0.0.2/tcp/0"}, Logger: r.log}
		cfg.TURN.Secret = rand.Text()
		if r.cloud, err = cloudrelay.Start(cfg); err != nil {
			r.close()
			return nil, fmt.Errorf("cloud relay: %w", err)
		}
	}
	return r, nil
}

func (r *callsRig) progress(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "%s scale calls: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

func (r *callsRig) close() {
	for _, p := range r.pairs {
		for _, n := range []*node.Node{p.caller, p.callee} {
			if n != nil {
				n.Close()
			}
		}
	}
	if r.cloud != nil {
		r.cloud.Close()
	}
	if r.sn != nil {
		r.sn.Close()
	}
	os.RemoveAll(r.dir)
}

// grow starts pairs of nodes until there are n, a few at a time.
func (r *callsRig) grow(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 4)
	for i := len(r.pairs); i < n; i++ {
		p := &callPair{i: i}
		r.pairs = append(r.pairs, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var err error
			if p.callee, err = r.startNode(ctx, p.calleeHandle(), p.answer); err == nil {
				p.caller, err = r.startNode(ctx, fmt.Sprintf("caller%d", p.i), nil)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// answer is a callee's AutoAnswer: speech back, and what it hears into
// the sink set for this call.
func (p *callPair) answer(node.CallInfo) (node.CallOptions, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calleeSink == nil {
		return node.CallOptions{}, errors.New("no call expected")
	}
	return node.CallOptions{Source: media.SpeechLikeSource(p.calleeSeed()), Sink: p.calleeSink}, nil
}

func (r *callsRig) startNode(ctx context.Context, handle string, auto func(node.CallInfo) (node.CallOptions, error)) (*node.Node, error) {
	home := fmt.Sprintf("%s/%s", r.dir, handle)
	if _, err := node.InitIdentity(home, handle, handle+"-laptop", time.Now()); err != nil {
		return nil, fmt.Errorf("%s: %w", handle, err)
	}
	cfg := node.Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: []peer.AddrInfo{r.sn.AddrInfo()},
		Logger: r.log, AutoAnswer: auto,
		Media: media.Config{IncludeLoopback: true, IPFilter: func(ip net.IP) bool { return ip.IsLoopback() }}}
	if r.cloud != nil {
		cfg.CloudRelays = []peer.AddrInfo{{ID: r.cloud.ID(), Addrs: r.cloud.Host().Addrs()}}
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", handle, err)
	}
	return n, nil
}

// liveCall is one call of a level: its two ends.
type liveCall struct {
	p    *callPair
	ends [2]*callEnd // caller's, callee's
	err  error
}

// callEnd is one end of a call: what it heard and its counters at the
// start of the window.
type callEnd struct {
	call       *node.Call
	sink       *media.CaptureSink
	heardSeed  uint64 // the seed of the speech the other end sends
	samples0   int
	concealed0 float64
	samples1   int
	stats      node.CallStats
	paths      []node.PathSwitch // every pair that carried the call, to the window's end
}

// level runs n calls at once: all placed together, measured for o.Audio
// once every one carries audio both ways, then hung up and judged.
func (r *callsRig) level(ctx context.Context, n int) CallsLevel {
	lv := CallsLevel{Calls: n, Tiers: map[string]int{}}
	idle0, i0 := cpuSeconds(), time.Now()
	select {
	case <-time.After(idleWindow):
	case <-ctx.Done():
	}
	lv.IdleCPUMSPerS = round2(1000 * (cpuSeconds() - idle0) / time.Since(i0).Seconds())
	calls := make([]*liveCall, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range calls {
		calls[i] = &liveCall{p: r.pairs[i]}
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls[i].err = r.place(ctx, calls[i])
		}()
	}
	wg.Wait()
	lv.SetupS = round2(time.Since(start).Seconds())
	// The window: every connected end's counters now and o.Audio later.
	for _, c := range calls {
		if c.err == nil {
			for _, e := range c.ends {
				e.samples0, e.concealed0 = e.sink.Len(), statsOf(e.call).ConcealedMS
			}
		}
	}
	cpu0, w0 := cpuSeconds(), time.Now()
	select {
	case <-time.After(r.o.Audio):
	case <-ctx.Done():
	}
	window := time.Since(w0)
	lv.CPUMSPerS = round2(1000 * (cpuSeconds() - cpu0) / window.Seconds())
	lv.CallCPUMSPerS = round2((lv.CPUMSPerS - lv.IdleCPUMSPerS) / float64(n))
	lv.Load = loadAverage()
	for _, c := range calls {
		if c.err == nil {
			for _, e := range c.ends {
				e.samples1, e.stats, e.paths = e.sink.Len(), statsOf(e.call), e.call.Info().Paths
			}
		}
	}
	r.hangUp(calls)
	r.judge(&lv, calls, window)
	return lv
}

// place makes one call and waits until both ends have heard audio.
func (r *callsRig) place(ctx context.Context, c *liveCall) error {
	limit := int((callSetupTimeout + r.o.Audio + 30*time.Second).Seconds() * media.SampleRate)
	callee := &callEnd{sink: media.NewCaptureSink(limit), heardSeed: c.p.callerSeed()}
	caller := &callEnd{sink: media.NewCaptureSink(limit), heardSeed: c.p.calleeSeed()}
	c.p.mu.Lock()
	c.p.calleeSink = callee.sink
	c.p.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, callSetupTimeout)
	defer cancel()
	call, err := c.p.caller.Call(wctx, c.p.calleeHandle(), node.CallOptions{Source: media.SpeechLikeSource(c.p.callerSeed()),
		Sink: caller.sink, Path: r.o.Relay})
	if err != nil {
		return fmt.Errorf("call %d: %w", c.p.i, err)
	}
	caller.call = call
	c.ends = [2]*callEnd{caller, callee}
	for _, e := range c.ends {
		if err := e.sink.Wait(wctx, media.FrameSamples); err != nil {
			call.Hangup()
			return fmt.Errorf("call %d: no audio: %w", c.p.i, err)
		}
	}
	if callee.call, err = c.p.callee.FindCall(call.ID()); err != nil {
		call.Hangup()
		return fmt.Errorf("call %d: the callee's end: %w", c.p.i, err)
	}
	return nil
}

func statsOf(c *node.Call) node.CallStats {
	if st := c.Info().Stats; st != nil {
		return *st
	}
	return node.CallStats{}
}

// hangUp ends every call and waits (bounded) for both ends to finish.
func (r *callsRig) hangUp(calls []*liveCall) {
	for _, c := range calls {
		if c.ends[0] != nil && c.ends[0].call != nil {
			c.ends[0].call.Hangup()
		}
	}
	deadline := time.After(20 * time.Second)
	for _, c := range calls {
		for _, e := range c.ends {
			if e == nil || e.call == nil {
				continue
			}
			select {
			case <-e.call.Done():
			case <-deadline:
				return
			}
		}
	}
}

// judge fills lv from the calls' ends.
func (r *callsRig) judge(lv *CallsLevel, calls []*liveCall, window time.Duration) {
	var moss []float64
	var lossSum, gapSum float64
	lv.MinCorrelation = 1
	for _, c := range calls {
		if c.err != nil {
			lv.Errors = append(lv.Errors, c.err.Error())
			continue
		}
		lv.Connected++
		good := true
		for j, e := range c.ends {
			mos, loss, gap := endHeard(e, window)
			moss = append(moss, mos)
			lossSum, gapSum = lossSum+loss, gapSum+gap
			lv.WorstHeardLossPct = max(lv.WorstHeardLossPct, round2(loss))
			if mos < r.o.MinMOS {
				good = false
			}
			if err := r.checkPaths(e, j == 0); err != nil {
				good = false
				lv.Errors = append(lv.Errors, fmt.Sprintf("call %d: %v", c.p.i, err))
			}
			if j == 0 && len(e.paths) > 0 {
				lv.Tiers[e.paths[len(e.paths)-1].Tier]++
			}
			heard := e.sink.Samples()
			ref, _ := media.ReadAll(media.SpeechLikeSource(e.heardSeed), len(heard)+callMaxLag)
			seg, _ := media.SegmentCorrelation(ref, heard, callMaxLag)
			lv.MinCorrelation = min(lv.MinCorrelation, round3(seg))
		}
		if good {
			lv.Good++
		}
	}
	if len(moss) == 0 {
		lv.MinCorrelation = 0
		return
	}
	sort.Float64s(moss)
	lv.MinMOS, lv.P50MOS = round2(moss[0]), round2(moss[len(moss)/2])
	lv.HeardLossPct = round2(lossSum / float64(len(moss)))
	lv.GapPct = round2(gapSum / float64(len(moss)))
}

// checkPaths checks that every pair that carried an end's call went the
// way the level asked: the caller's end names the tier it chose, both
// ends see a relayed pair as "relay". A moment without media (TierNone
// in the stats, on a starved machine) is not a path.
func (r *callsRig) checkPaths(e *callEnd, caller bool) error {
	if len(e.paths) == 0 {
		return errors.New("no path carried the call")
	}
	for _, p := range e.paths {
		switch {
		case caller && p.Tier != r.tier:
			return fmt.Errorf("went %s (%s), not %s", p.Tier, p.Detail, r.tier)
		case r.o.Relay != "" && p.Path != "relay":
			return fmt.Errorf("a %s pair (%s) carried it, not a relayed one", p.Path, p.Detail)
		}
	}
	return nil
}

// endHeard is the MOS of what an end heard over the window, and the
// share (percent) of the window it did not hear the peer: audio its
// playout concealed, plus frames it never played because it fell behind
// real time (its sink got fewer than one frame per 20 ms), that part
// alone as gapPct. The E-model
// (media.EModelR) takes that share as its loss, with the delay impairment
// of the node's own estimate (CallStats.MOS, from the call's one-way delay
// and its loss so far).
func endHeard(e *callEnd, window time.Duration) (mos, lossPct, gapPct float64) {
	frames := window.Seconds() * 50
	played := float64(e.samples1-e.samples0) / media.FrameSamples
	gap := max(0, frames-played)
	concealed := (e.stats.ConcealedMS - e.concealed0) / 20
	lossPct = min(100, 100*(concealed+gap)/frames)
	// The node's R without its loss impairment is its delay's rating.
	heardMS := float64(e.samples1) / media.SampleRate * 1000
	var nodeLoss float64
	if heardMS > 0 {
		nodeLoss = min(100, 100*e.stats.ConcealedMS/heardMS)
	}
	delayR := rFromMOS(e.stats.MOS) + lossImpairment(nodeLoss)
	return media.MOSFromR(delayR - lossImpairment(lossPct)), lossPct, 100 * gap / frames
}

// lossImpairment is the E-model's Ie,eff for Opus at lossPct random loss
// (the loss term of media.EModelR).
func lossImpairment(lossPct float64) float64 {
	return media.EModelR(0, 0) - media.EModelR(0, lossPct)
}

// rFromMOS inverts media.MOSFromR (increasing on [0, 100]) by bisection.
func rFromMOS(mos float64) float64 {
	lo, hi := 0.0, 100.0
	for range 50 {
		mid := (lo + hi) / 2
		if media.MOSFromR(mid) < mos {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// WriteTable prints the levels as a table and the verdict.
func (r *CallsResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "calls\tconnected\tMOS≥min\tMOS min\tMOS p50\theard loss mean\tworst\tno frame played\tcorrelation min\ttiers\tsetup s\tCPU ms/s\tidle\tper call\tload")
	for _, l := range r.Levels {
		var tiers []string
		for t, n := range l.Tiers {
			tiers = append(tiers, fmt.Sprintf("%s:%d", t, n))
		}
		sort.Strings(tiers)
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%.2f\t%.2f%%\t%.2f%%\t%.2f%%\t%.3f\t%s\t%.1f\t%.0f\t%.0f\t%.1f\t%s\n", l.Calls, l.Connected, l.Good, l.MinMOS, l.P50MOS,
			l.HeardLossPct, l.WorstHeardLossPct, l.GapPct, l.MinCorrelation, strings.Join(tiers, " "), l.SetupS, l.CPUMSPerS, l.IdleCPUMSPerS, l.CallCPUMSPerS, l.Load)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%s: %d calls at once, every one heard at MOS ≥ %.1f by both ends (%d CPUs); stopped: %s\n",
		r.Relay, r.Carried, r.MinMOS, r.CPUs, r.Stopped)
	return err
}
