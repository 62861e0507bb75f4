package outage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parley-net/parley/lab/natlab"
	"github.com/parley-net/parley/lab/netlab"
	"github.com/parley-net/parley/node"

	_ "modernc.org/sqlite" // reading a stopped daemon's history
)

// Options configures Run. The zero value is the full sweep: every
// topology and scenario with the default workload.
type Options struct {
	// Binary is the parley binary run in the namespaces; empty means this
	// process's executable (right for `parley lab outage`, wrong for a
	// test binary).
	Binary string
	// Out is where the report and every run's homes and logs go;
	// required.
	Out string
	// Seed draws the workload and the servers a fraction-of-supernodes
	// fault hits; 0 means 1.
	Seed uint64
	// Quick is the short run: 6 devices, 30 s of workload, the outage 10
	// s in and scenario times scaled by 1/6, scenarios QuickScenarios,
	// 2 sites of one supernode. Fields set explicitly still win.
	Quick bool
	// Topologies and Scenarios to run; nil means all (or the quick set).
	Topologies []Topology
	Scenarios  []Scenario
	// Workload sizes the users and their activity (see WorkloadConfig).
	Workload WorkloadConfig
	// OutageAt is when the fault strikes after the workload starts
	// (default 20 s, quick 10 s).
	OutageAt time.Duration
	// TimeScale multiplies scenario durations (Down, Up); 0 means 1 (quick
	// 1/6: msn-2001's reboot lasts 10 s).
	TimeScale float64
	// Drain is how long the run waits after the workload's last operation
	// before it counts what arrived (default 15 s, quick 8 s).
	Drain time.Duration
	// Sites and SupernodesPerSite lay the supernodes out (default 3 × 2,
	// quick 2 × 1); the cloud topology puts them all in the cloud region.
	Sites, SupernodesPerSite int
	// LoadThreshold is the established TCP connections above which a
	// supernode surviving an Overload scenario crashes; 0 turns the
	// cascade off.
	LoadThreshold int
	// Parallel is how many runs (topologies of one scenario) go at once;
	// 0 means all topologies of a scenario together.
	Parallel int
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// Logger receives netlab's records; nil discards them.
	Logger *slog.Logger

	binary string
	idDir  string
}

// resolve checks o and fills in its defaults (the quick run's where
// Quick is set) and the parley binary the lab runs.
func (o *Options) resolve() error {
	if o.Out == "" {
		return errors.New("outage: Options.Out is required")
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	pick := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	if o.Quick {
		o.quickDefaults()
	}
	o.Workload = o.Workload.withDefaults()
	pick(&o.OutageAt, 20*time.Second, 10*time.Second)
	pick(&o.Drain, 15*time.Second, 8*time.Second)
	if o.TimeScale == 0 {
		o.TimeScale = 1
	}
	if o.Sites == 0 {
		o.Sites = 3
		if o.Quick {
			o.Sites = 2
		}
	}
	if o.SupernodesPerSite == 0 {
		o.SupernodesPerSite = 2
		if o.Quick {
			o.SupernodesPerSite = 1
		}
	}
	if o.Sites < 2 && len(o.Scenarios) > 0 {
		return fmt.Errorf("outage: %d site(s): a site outage needs at least 2", o.Sites)
	}
	if o.Topologies == nil {
		o.Topologies = Topologies()
	}
	if o.Scenarios == nil {
		o.Scenarios = append([]Scenario(nil), Scenarios...)
	}
	for _, s := range o.Scenarios {
		if err := s.check(); err != nil {
			return err
		}
	}
	if o.OutageAt >= o.Workload.Length {
		return fmt.Errorf("outage: the outage at %s comes after the workload's %s", o.OutageAt, o.Workload.Length)
	}
	if o.Parallel <= 0 {
		o.Parallel = len(o.Topologies)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.findBinary()
}

// quickDefaults fills in the smaller workload, time scale and scenarios of
// a quick run, where o leaves them zero.
func (o *Options) quickDefaults() {
	if o.Workload.Devices == 0 {
		o.Workload.Devices = 6
	}
	if o.Workload.Length == 0 {
		o.Workload.Length = 30 * time.Second
	}
	if o.Workload.CallMean == 0 {
		o.Workload.CallMean = 15 * time.Second
	}
	if o.Workload.CallRate == 0 {
		o.Workload.CallRate = 20
	}
	if o.Workload.MsgRate == 0 {
		o.Workload.MsgRate = 40
	}
	if o.Workload.Offline == 0 {
		o.Workload.Offline = 1
	}
	if o.Workload.GroupSize == 0 {
		o.Workload.GroupSize = 3
	}
	if o.TimeScale == 0 {
		o.TimeScale = 1.0 / 6
	}
	if o.Scenarios == nil {
		for _, n := range QuickScenarios {
			s, _ := ScenarioByName(n)
			o.Scenarios = append(o.Scenarios, s)
		}
	}
}

// findBinary sets the parley binary the lab runs: Options.Binary, else the
// running executable.
func (o *Options) findBinary() error {
	p := o.Binary
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		p = exe
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		return fmt.Errorf("outage: parley binary %s: not an executable file (%v)", abs, err)
	}
	o.binary = abs
	return nil
}

// Run runs every topology × scenario on the seed's workload and writes
// the report to Options.Out. Calls dropped and messages lost are in the
// report; the error is for a lab that could not be built or run.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := netlab.Available(); err != nil {
		return nil, err
	}
	if err := opts.resolve(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	if err := netlab.SweepStale("pl"); err != nil {
		return nil, fmt.Errorf("sweep stale labs: %w", err)
	}
	wl := NewWorkload(opts.Seed, opts.Workload)
	opts.idDir = filepath.Join(opts.Out, "runs", "ids")
	if err := initIdentities(ctx, opts.binary, opts.idDir, wl.Devices); err != nil {
		return nil, err
	}
	rep := &Report{Seed: opts.Seed, Out: opts.Out, Workload: wl, opts: opts}
	start := time.Now()
	total := len(opts.Topologies) * len(opts.Scenarios)
	progress(opts.Progress, "outage lab: seed %d, %d devices, %d calls and %d messages planned over %s; %d runs (%d topologies × %d scenarios)",
		opts.Seed, len(wl.Devices), len(wl.Calls), len(wl.Messages), wl.Length, total, len(opts.Topologies), len(opts.Scenarios))
	// The control run first: the others' recovery discounts the calls it
	// could not connect either.
	slices.SortStableFunc(opts.Scenarios, func(a, b Scenario) int {
		return cmpBool(b.Name == None, a.Name == None)
	})
	control := map[Topology]*RunResult{}
	for _, sc := range opts.Scenarios {
		var batch []Topology
		for i, t := range opts.Topologies {
			batch = append(batch, t)
			if len(batch) < opts.Parallel && i < len(opts.Topologies)-1 {
				continue
			}
			results := make([]*RunResult, len(batch))
			errs := make([]error, len(batch))
			var wg sync.WaitGroup
			for j, t := range batch {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[j], errs[j] = runOne(ctx, &opts, wl, t, sc, start, control[t])
				}()
			}
			wg.Wait()
			for j := range batch {
				if errs[j] != nil {
					return rep, fmt.Errorf("%s × %s: %w", batch[j], sc.Name, errs[j])
				}
				rep.Runs = append(rep.Runs, results[j])
				if sc.Name == None {
					control[batch[j]] = results[j]
				}
				progress(opts.Progress, "[%s] %s", time.Since(start).Round(time.Second), results[j].line())
			}
			batch = nil
		}
	}
	rep.Elapsed = time.Since(start)
	if err := rep.Write(); err != nil {
		return rep, err
	}
	progress(opts.Progress, "outage lab done in %s: report in %s", rep.Elapsed.Round(time.Second), filepath.Join(opts.Out, "report.md"))
	return rep, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// run is one topology × scenario.
type run struct {
	opts  *Options
	topo  Topology
	sc    Scenario
	wl    *Workload
	dir   string
	lab   *lab
	t0    time.Time
	sweep time.Time
	// control is the same topology's control run, when it ran first.
	control *RunResult

	// mu guards the fields below and the servers' proc and addrs.
	mu     sync.Mutex
	calls  []*CallEvent
	msgs   []*MsgEvent
	faults []FaultEvent
}

func (r *run) since() time.Duration { return time.Since(r.t0) }

func runOne(ctx context.Context, opts *Options, wl *Workload, topo Topology, sc Scenario, sweep time.Time, control *RunResult) (*RunResult, error) {
	r := &run{opts: opts, topo: topo, sc: sc, wl: wl, sweep: sweep, control: control,
		dir: filepath.Join(opts.Out, "runs", string(topo)+"-"+sc.Name)}
	os.RemoveAll(r.dir)
	for _, d := range []string{r.dir, filepath.Join(r.dir, "calls")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	tag := fmt.Sprintf("%s × %s", topo, sc.Name)
	built := time.Now()
	l, err := buildLab(ctx, r)
	if err != nil {
		return nil, err
	}
	r.lab = l
	defer l.close()
	progress(opts.Progress, "[%s] %s: lab up in %.1f s (%d servers, %d daemons)", time.Since(sweep).Round(time.Second), tag,
		time.Since(built).Seconds(), len(l.servers), len(l.order))
	if len(wl.Group) > 0 {
		r.createGroup(ctx)
	}
	r.t0 = time.Now()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range wl.Calls {
		wg.Add(1)
		go func() { defer wg.Done(); r.doCall(rctx, c) }()
	}
	for _, m := range wl.Messages {
		wg.Add(1)
		go func() { defer wg.Done(); r.doMessage(rctx, m) }()
	}
	for _, o := range wl.Offline {
		wg.Add(1)
		go func() { defer wg.Done(); r.doOffline(rctx, o) }()
	}
	if sc.Name != None {
		wg.Add(1)
		go func() { defer wg.Done(); r.doFault(rctx) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	end := time.NewTimer(wl.Length + opts.Drain)
	defer end.Stop()
	waitingEnd := true
	for waitingEnd {
		select {
		case <-tick.C:
			progress(opts.Progress, "[%s] %s: t=%2.0fs %s", time.Since(sweep).Round(time.Second), tag, r.since().Seconds(), r.counts())
		case <-end.C:
			waitingEnd = false
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// The fault's loops end with rctx; calls still up are hung up by
	// their own timers, which have passed.
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		progress(opts.Progress, "%s: some operations did not end within 30 s of the run's end", tag)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.collect(ctx)
	return r.result(), nil
}

// counts is the progress line's tally so far.
func (r *run) counts() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	connected := 0
	for _, c := range r.calls {
		if c.Connected {
			connected++
		}
	}
	return fmt.Sprintf("calls %d placed, %d connected; messages %d sent; faults %d", len(r.calls), connected, len(r.msgs), len(r.faults))
}

// appWait is how long a user waits for their device's app (its daemon,
// back from an offline window) to start before giving up on a call or a
// message.
const appWait = 30 * time.Second

// waitAPI returns the device's control API client, waiting (up to
// appWait) while its daemon is starting again; nil if it is not back.
func (r *run) waitAPI(ctx context.Context, h string) *node.Client {
	d := r.lab.devices[h]
	deadline := time.Now().Add(appWait)
	for {
		if cl := d.api(); cl != nil || time.Now().After(deadline) {
			return cl
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// sleepUntil waits until offset after t0; false when ctx ended first.
func (r *run) sleepUntil(ctx context.Context, offset time.Duration) bool {
	t := time.NewTimer(time.Until(r.t0.Add(offset)))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// createGroup makes the workload's group before the clock starts,
// retrying while the members' handles are not yet resolvable.
func (r *run) createGroup(ctx context.Context) {
	owner := r.lab.devices[r.wl.Group[0]]
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := owner.api().CreateGroup(cctx, strings.TrimPrefix(GroupName, "#"), r.wl.Group[1:])
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				r.addFault(FaultEvent{What: "group create failed: " + err.Error()})
			}
			return
		}
		time.Sleep(time.Second)
	}
}

// CallEvent is what happened to one planned call.
type CallEvent struct {
	Plan      CallPlan `json:"plan"`
	Placed    bool     `json:"placed"` // the caller's daemon took the request
	Connected bool     `json:"connected"`
	// Dropped: it connected and ended before the caller hung up.
	Dropped bool    `json:"dropped"`
	SetupMS float64 `json:"setup_ms"`
	Reason  string  `json:"reason,omitempty"` // how it ended, when not hung up by the lab
	Tier    string  `json:"tier,omitempty"`   // the tier at the last poll with media
	Error   string  `json:"error,omitempty"`
	// ActiveAt and EndAt are offsets from the workload's start.
	ActiveAt, EndAt time.Duration
	// Up is, per second of the run (index), whether the last poll in it
	// saw the call active with a media path.
	Up map[int]bool `json:"-"`
	// GapMS is the longest silence the caller heard inside the outage
	// window (-1: the call was not up across it).
	GapMS     float64 `json:"gap_ms"`
	recording string
}

const (
	callPoll     = 500 * time.Millisecond
	setupTimeout = 30 * time.Second
)

// doCall places one planned call, follows it until its planned end or its
// loss, and records what the user would have seen of it.
// Long because placing, following and recording one call share its
// process and timeline.
func (r *run) doCall(ctx context.Context, p CallPlan) {
	if !r.sleepUntil(ctx, p.Start) {
		return
	}
	ev := &CallEvent{Plan: p, Up: map[int]bool{}, GapMS: -1,
		recording: filepath.Join(r.dir, "calls", fmt.Sprintf("call-%03d-%s-%s.wav", p.ID, p.Caller, p.Callee))}
	r.mu.Lock()
	r.calls = append(r.calls, ev)
	r.mu.Unlock()
	set := func(f func()) {
		r.mu.Lock()
		defer r.mu.Unlock()
		f()
	}
	cl := r.waitAPI(ctx, p.Caller)
	if cl == nil {
		set(func() { ev.Error = "caller offline" })
		return
	}
	placed := time.Now()
	cctx, cancel := context.WithTimeout(ctx, apiTimeout*2)
	info, err := cl.Call(cctx, p.Callee, node.AudioSpec{Speech: true, Out: ev.recording}, "", "")
	cancel()
	if err != nil {
		set(func() { ev.Error = err.Error(); ev.EndAt = r.since() })
		return
	}
	set(func() { ev.Placed = true })
	hangAt := r.t0.Add(p.Start + p.Length)
	// A call rings for up to setupTimeout, even past its planned end (a
	// user waits for ringing); once connected it lasts until its end.
	for {
		r.mu.Lock()
		connected := ev.Connected
		r.mu.Unlock()
		if connected && time.Now().After(hangAt) {
			break
		}
		actx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		ci, err := cl.CallInfo(actx, info.ID)
		cancel()
		at := r.since()
		if err == nil {
			set(func() {
				if ci.State == node.CallActive && !ev.Connected {
					ev.Connected, ev.ActiveAt = true, at
					ev.SetupMS = ci.SetupMS
					if ev.SetupMS == 0 {
						ev.SetupMS = float64(time.Since(placed).Milliseconds())
					}
				}
				up := ci.State == node.CallActive && (ci.Stats == nil || ci.Stats.Tier != node.TierNone)
				ev.Up[int(at/time.Second)] = up
				if up && ci.Stats != nil {
					ev.Tier = ci.Stats.Tier
				}
			})
			if ci.State == node.CallEnded {
				set(func() {
					ev.Reason, ev.EndAt = ci.Reason, at
					ev.Dropped = ev.Connected
					if !ev.Connected && ev.Error == "" {
						ev.Error = "ended before connecting: " + ci.Reason
					}
				})
				return
			}
		}
		if !connected && time.Since(placed) > setupTimeout {
			set(func() { ev.Error = "not connected within " + setupTimeout.String() })
			break
		}
		select {
		case <-time.After(callPoll):
		case <-ctx.Done():
			return
		}
	}
	actx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	cl.CallVerb(actx, "hangup", info.ID, node.AudioSpec{})
	cancel()
	set(func() { ev.EndAt = r.since() })
}

// MsgEvent is one planned message.
type MsgEvent struct {
	Plan   MessagePlan `json:"plan"`
	SentAt time.Duration
	ID     string // the message ID parley gave it
	Token  string // in the body, to find it at the recipients
	Error  string // the send request failed
	// Per recipient handle.
	Recipients []*Receipt
}

// Receipt is one recipient's copy of a message.
type Receipt struct {
	Handle     string
	Delivered  bool
	LatencyMS  float64 // from the send to the recipient's commit (its received_ms)
	ReceivedAt time.Duration
	Copies     int    // in the recipient's history (more than 1: duplicates)
	State      string // the sender's view at the end: sent, mailbox, delivered, read, refused
	// Outcome: delivered, pending (the sender still queues it or a
	// mailbox holds it) or lost.
	Outcome string
}

func (r *run) doMessage(ctx context.Context, m MessagePlan) {
	if !r.sleepUntil(ctx, m.At) {
		return
	}
	ev := &MsgEvent{Plan: m, Token: fmt.Sprintf("wl-%04d", m.ID), SentAt: r.since()}
	for _, h := range r.wl.Recipients(m) {
		ev.Recipients = append(ev.Recipients, &Receipt{Handle: h})
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, ev)
	r.mu.Unlock()
	cl := r.waitAPI(ctx, m.From)
	r.mu.Lock()
	ev.SentAt = r.since()
	if cl == nil {
		ev.Error = "sender offline"
	}
	r.mu.Unlock()
	if cl == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := cl.Send(cctx, m.To, fmt.Sprintf("%s %s → %s", ev.Token, m.From, m.To))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		ev.Error = err.Error()
		return
	}
	ev.ID = res.Message.ID
}

// doOffline stops a device's daemon for its window and starts it again.
func (r *run) doOffline(ctx context.Context, o OfflinePlan) {
	d := r.lab.devices[o.Handle]
	if !r.sleepUntil(ctx, o.From) {
		return
	}
	r.lab.stopDaemon(d)
	r.addFault(FaultEvent{At: r.since(), What: "device offline", Target: o.Handle})
	if !r.sleepUntil(ctx, o.Until) {
		return
	}
	if err := r.lab.startDaemon(ctx, d); err != nil {
		r.addFault(FaultEvent{At: r.since(), What: "device restart failed: " + firstLine(err.Error()), Target: o.Handle})
		return
	}
	r.addFault(FaultEvent{At: r.since(), What: "device online", Target: o.Handle})
}

// FaultEvent is one thing the scenario (or an offline window) did.
type FaultEvent struct {
	At     time.Duration
	What   string
	Target string
}

func (r *run) addFault(f FaultEvent) {
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
}

// targets are the servers the scenario hits.
func (r *run) targets() []*server {
	var out []*server
	switch r.sc.Target {
	case TargetCloud:
		for _, s := range r.lab.servers {
			if s.site == "cloud" {
				out = append(out, s)
			}
		}
	case TargetSite:
		site := r.lab.supernodes()[0].site
		for _, s := range r.lab.servers {
			if s.site == site {
				out = append(out, s)
			}
		}
	case TargetSupernodes:
		sns := r.lab.supernodes()
		n := max(1, int(r.sc.Share*float64(len(sns))+0.5))
		rng := rand.New(rand.NewPCG(r.opts.Seed, 0x5c9e))
		for _, i := range rng.Perm(len(sns))[:min(n, len(sns))] {
			out = append(out, sns[i])
		}
	}
	return out
}

func (r *run) kill(ss []*server, wipe bool) {
	for _, s := range ss {
		r.mu.Lock()
		p := s.proc
		s.proc = nil
		r.mu.Unlock()
		if p != nil {
			p.Kill()
		}
		what := "killed"
		if wipe {
			os.RemoveAll(s.home)
			what = "killed, home wiped"
		}
		r.addFault(FaultEvent{At: r.since(), What: what, Target: s.name})
	}
}

func (r *run) restart(ctx context.Context, ss []*server) {
	for _, s := range ss {
		if err := r.lab.startServer(ctx, s); err != nil {
			r.addFault(FaultEvent{At: r.since(), What: "restart failed: " + firstLine(err.Error()), Target: s.name})
			continue
		}
		r.addFault(FaultEvent{At: r.since(), What: "restarted", Target: s.name})
	}
}

// doFault plays the scenario.
func (r *run) doFault(ctx context.Context) {
	if !r.sleepUntil(ctx, r.opts.OutageAt) {
		return
	}
	ts := r.targets()
	down, up := scaled(r.sc.Down, r.opts.TimeScale), scaled(r.sc.Up, r.opts.TimeScale)
	switch r.sc.Action {
	case Reboot:
		r.kill(ts, false)
		if r.sleepUntil(ctx, r.opts.OutageAt+down) {
			r.restart(ctx, ts)
		}
	case Destroy:
		r.kill(ts, true)
	case Crash:
		r.kill(ts, false)
		if r.sc.Overload && r.opts.LoadThreshold > 0 {
			r.overload(ctx, ts)
		}
	case BootLoop:
		at := r.opts.OutageAt
		for {
			r.kill(ts, false)
			at += down
			if !r.sleepUntil(ctx, at) || at >= r.wl.Length {
				return
			}
			r.restart(ctx, ts)
			at += up
			if !r.sleepUntil(ctx, at) || at >= r.wl.Length {
				return
			}
		}
	}
}

// overload crashes, every 5 s until the workload ends, each surviving
// supernode with more than LoadThreshold established TCP connections.
func (r *run) overload(ctx context.Context, dead []*server) {
	gone := map[*server]bool{}
	for _, s := range dead {
		gone[s] = true
	}
	for at := r.opts.OutageAt + 5*time.Second; at < r.wl.Length; at += 5 * time.Second {
		if !r.sleepUntil(ctx, at) {
			return
		}
		for _, s := range r.lab.supernodes() {
			if gone[s] {
				continue
			}
			n, err := establishedTCP(ctx, s.host)
			if err == nil && n > r.opts.LoadThreshold {
				gone[s] = true
				r.kill([]*server{s}, false)
				r.addFault(FaultEvent{At: r.since(), What: fmt.Sprintf("overloaded (%d TCP connections > %d): crashed", n, r.opts.LoadThreshold), Target: s.name})
			}
		}
	}
}

// establishedTCP counts the established TCP connections in h's namespace.
func establishedTCP(ctx context.Context, h *netlab.Host) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", "netns", "exec", h.Namespace, "ss", "-Htn", "state", "established")
	out, err := cmd.Output()
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return 0, nil
	}
	return strings.Count(s, "\n") + 1, nil
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// collect reads, at the end of the run, every device's view of the
// messages (see deviceView) and judges the calls' recordings.
func (r *run) collect(ctx context.Context) {
	views := map[string]*deviceView{}
	for _, d := range r.lab.order {
		views[d.Handle] = r.view(ctx, d)
	}
	r.mu.Lock()
	msgs := append([]*MsgEvent(nil), r.msgs...)
	calls := append([]*CallEvent(nil), r.calls...)
	r.mu.Unlock()
	for _, ev := range msgs {
		for _, rc := range ev.Recipients {
			got := views[rc.Handle].received[ev.Token]
			rc.Copies = len(got)
			if len(got) > 0 {
				rc.Delivered = true
				sent := r.t0.Add(ev.SentAt)
				rc.LatencyMS = max(0, float64(got[0]-sent.UnixMilli()))
				rc.ReceivedAt = time.UnixMilli(got[0]).Sub(r.t0)
			}
			rc.State = views[ev.Plan.From].sent[ev.Token][rc.Handle]
			switch {
			case rc.Delivered:
				rc.Outcome = "delivered"
			case ev.Error == "" && (rc.State == "sent" || rc.State == "mailbox"):
				rc.Outcome = "pending"
			default:
				rc.Outcome = "lost"
			}
		}
	}
	start, end, _ := r.gapWindow()
	for _, c := range calls {
		c.GapMS = r.gap(ctx, c, start, end)
	}
}

// deviceView is what one device holds of the workload's messages:
// received maps a message's token to the recipient's commit times
// (received_ms; more than one is a duplicate), sent maps it to the state
// of each recipient handle as the sender sees it (sent, mailbox,
// delivered, read, refused).
type deviceView struct {
	received map[string][]int64
	sent     map[string]map[string]string
}

func tokenOf(body string) string {
	tok, _, _ := strings.Cut(body, " ")
	if !strings.HasPrefix(tok, "wl-") {
		return ""
	}
	return tok
}

// view reads a device's messages through its control API, or, when its
// daemon is down (an offline device that could not come back during the
// outage), from its database file.
func (r *run) view(ctx context.Context, d *device) *deviceView {
	v := &deviceView{received: map[string][]int64{}, sent: map[string]map[string]string{}}
	add := func(m node.Message) {
		tok := tokenOf(m.Body)
		if tok == "" {
			return
		}
		if !m.Outgoing {
			v.received[tok] = append(v.received[tok], m.ReceivedMS)
			return
		}
		if v.sent[tok] == nil {
			v.sent[tok] = map[string]string{}
		}
		for _, ds := range m.Devices {
			v.sent[tok][ds.Handle] = ds.State
		}
	}
	cl := d.api()
	if cl == nil {
		if err := readStore(ctx, d.home, add); err != nil {
			r.addFault(FaultEvent{At: r.since(), What: "history unreadable: " + err.Error(), Target: d.Handle})
		}
		return v
	}
	convs := []string{}
	for _, o := range r.wl.Devices {
		if o.Handle != d.Handle {
			convs = append(convs, o.Handle)
		}
	}
	if slices.Contains(r.wl.Group, d.Handle) {
		convs = append(convs, GroupName)
	}
	for _, c := range convs {
		cctx, cancel := context.WithTimeout(ctx, apiTimeout*2)
		msgs, err := cl.History(cctx, c, 0)
		cancel()
		if err != nil {
			r.addFault(FaultEvent{At: r.since(), What: "history with " + c + " unreadable: " + firstLine(err.Error()), Target: d.Handle})
			continue
		}
		for _, m := range msgs {
			add(m)
		}
	}
	return v
}

// readStore reads a stopped daemon's messages from its SQLite file (the
// schema of node/store.go): every message, and for outgoing ones each
// recipient device's outbox state.
func readStore(ctx context.Context, home string, add func(node.Message)) error {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(home, "parley.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT m.id, m.body, m.received_ms, m.outgoing, IFNULL(o.handle, ''), IFNULL(o.state, -1), IFNULL(o.read_ms, 0)
		FROM messages m LEFT JOIN outbox o ON o.id = m.id AND o.kind = 'msg'`)
	if err != nil {
		return err
	}
	defer rows.Close()
	names := map[int]string{0: "sent", 1: "mailbox", 2: "delivered", 9: "refused"}
	seen := map[string]bool{}
	for rows.Next() {
		var id, body, handle string
		var received, readMS int64
		var outgoing bool
		var state int
		if err := rows.Scan(&id, &body, &received, &outgoing, &handle, &state, &readMS); err != nil {
			return err
		}
		m := node.Message{ID: id, Body: body, ReceivedMS: received, Outgoing: outgoing}
		if outgoing && handle != "" {
			st := names[state]
			if state == 2 && readMS > 0 {
				st = "read"
			}
			m.Devices = []node.DeviceState{{Handle: handle, State: st}}
		} else if seen[id] {
			continue // one row per message for incoming ones
		}
		seen[id] = true
		add(m)
	}
	return rows.Err()
}

// gapWindow is where audio gaps are measured: the outage, or for the
// control run the same span a permanent fault would have.
func (r *run) gapWindow() (start, end time.Duration, permanent bool) {
	start, end, permanent = r.sc.Window(r.opts.OutageAt, r.wl.Length, r.opts.TimeScale)
	if end <= start {
		end = r.wl.Length
	}
	return
}

// gap is the longest run of silence the caller heard within [from, to]
// of the workload clock: the recording starts when the call became
// active, and a call that ended early is silent from its end to its
// planned end. -1 for a call not up when the window opened nor later in
// it.
func (r *run) gap(ctx context.Context, c *CallEvent, from, to time.Duration) float64 {
	planEnd := c.Plan.Start + c.Plan.Length
	if !c.Connected || c.ActiveAt > to || planEnd < from || c.ActiveAt > from && c.ActiveAt >= to {
		return -1
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rec, err := natlab.WaitRecording(cctx, c.recording)
	if err != nil {
		rec = natlab.ReadUnclosedWAV(c.recording, int((planEnd-c.ActiveAt).Seconds()*48000))
	}
	silent := natlab.SilentFrames(rec)
	frameOf := func(t time.Duration) int { return int((t - c.ActiveAt) / (20 * time.Millisecond)) }
	lo, hi := max(0, frameOf(from)), frameOf(min(to, planEnd))
	run, best := 0, 0
	for i := lo; i < hi; i++ {
		if i >= len(silent) || silent[i] {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
	}
	return float64(best * 20)
}

// result sums the run up.
func (r *run) result() *RunResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	start, end, permanent := r.sc.Window(r.opts.OutageAt, r.wl.Length, r.opts.TimeScale)
	res := &RunResult{Topology: r.topo, Scenario: r.sc.Name, Calls: r.calls, Messages: r.msgs, Faults: r.faults,
		Length: r.wl.Length, Drain: r.opts.Drain, Dir: r.dir}
	if r.sc.Name != None {
		res.OutageStart, res.OutageEnd, res.Permanent = start, end, permanent
	}
	res.summarize(r.wl, r.control)
	return res
}
