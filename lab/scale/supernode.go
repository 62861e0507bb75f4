package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sys/unix"

	"github.com/parley-net/parley/internal/keyfile"
)

// SupernodeOptions configure RunSupernode. Zero values mean the defaults
// named.
type SupernodeOptions struct {
	// Binary is the parley binary to run; "" means this one.
	Binary string
	// Devices to connect (required); Over more to try afterwards.
	Devices, Over int
	// MaxDevices is the supernode's --max-devices; 0 means its default.
	MaxDevices int
	// NATed is the share of devices taking a relay reservation.
	NATed float64
	// Republish is each device's record republish interval; 0 means 10
	// minutes (node.DefaultRepublishInterval).
	Republish time.Duration
	// Idle is how long idle CPU is measured; 0 means 30 s.
	Idle time.Duration
	// Generators is how many load-generator processes share the devices;
	// 0 means as many as their file-descriptor limit needs (a device holds
	// two descriptors in the generator: LoadFDs).
	Generators int
	// Dir keeps the supernode's home and logs; "" means a temporary one.
	Dir string
	// Progress receives progress lines; nil is silent.
	Progress io.Writer
}

// SupernodeResult is what RunSupernode measured of the supernode process.
type SupernodeResult struct {
	Devices    int     `json:"devices"`
	MaxDevices int     `json:"max_devices"`
	NATed      float64 `json:"nated_share"`
	FDLimit    uint64  `json:"fd_limit"`
	Generators int     `json:"load_generators"`

	Wave  LoadReport  `json:"wave"`
	Over  *LoadReport `json:"over,omitempty"`
	Check *LoadReport `json:"check,omitempty"`

	BaseRSSMB     float64 `json:"base_rss_mb"`
	LoadedRSSMB   float64 `json:"loaded_rss_mb"`
	KBPerDevice   float64 `json:"kb_per_device"`
	IdleCPU       float64 `json:"idle_cpu_percent_of_a_core"`
	BaseFDs       int     `json:"base_fds"`
	LoadedFDs     int     `json:"loaded_fds"`
	OverRSSMB     float64 `json:"over_rss_mb"`
	OverFDs       int     `json:"over_fds"`
	RefusalLines  int     `json:"refusal_log_lines"`
	RefusalSample string  `json:"refusal_log_sample,omitempty"`
	Alive         bool    `json:"supernode_alive"`
	Load          string  `json:"load_average"`
}

// RunSupernode starts `parley supernode` on 127.0.0.1 and load generators
// (`parley lab scale load`) as processes of their own, connects
// o.Devices devices, measures the supernode's memory, file descriptors
// and idle CPU from /proc, tries o.Over more, and checks that the first
// devices are still served.
func RunSupernode(ctx context.Context, o SupernodeOptions) (*SupernodeResult, error) {
	if o.Devices <= 0 || o.Over < 0 || o.NATed < 0 || o.NATed > 1 {
		return nil, errors.New("scale supernode: need a positive device count, Over ≥ 0 and a NATed share in 0..1")
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Binary = exe
	}
	if o.Republish == 0 {
		o.Republish = 10 * time.Minute
	}
	if o.Idle == 0 {
		o.Idle = 30 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "parley-scale-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	}
	res := &SupernodeResult{Devices: o.Devices, MaxDevices: o.MaxDevices, NATed: o.NATed}
	sn, target, err := startSupernode(ctx, o)
	if err != nil {
		return nil, err
	}
	defer sn.stop()
	res.FDLimit = sn.fdLimit()
	time.Sleep(2 * time.Second) // let start-up allocations settle (not a wait for an event)
	res.BaseRSSMB, res.BaseFDs = sn.rssMB(), sn.fds()
	fmt.Fprintf(o.Progress, "scale supernode: %s up, RSS %.0f MB, %d fds (limit %d); connecting %d devices\n", target, res.BaseRSSMB, res.BaseFDs, res.FDLimit, o.Devices)

	gens, err := startGenerators(ctx, o, target)
	defer gens.stop()
	if err != nil {
		return res, err
	}
	res.Generators = len(gens)
	if res.Wave, err = gens.report(""); err != nil {
		return res, err
	}
	fmt.Fprintf(o.Progress, "scale supernode: %d connected, %d refused in %.0f s; measuring idle CPU for %s\n", res.Wave.Connected, res.Wave.Refused, res.Wave.Seconds, o.Idle)
	cpu0 := sn.cpuTicks()
	t0 := time.Now()
	select {
	case <-time.After(o.Idle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.IdleCPU = 100 * float64(sn.cpuTicks()-cpu0) / clockTicks / time.Since(t0).Seconds()
	res.LoadedRSSMB, res.LoadedFDs = sn.rssMB(), sn.fds()
	if res.Wave.Connected > 0 {
		res.KBPerDevice = (res.LoadedRSSMB - res.BaseRSSMB) * 1024 / float64(res.Wave.Connected)
	}
	if o.Over > 0 {
		fmt.Fprintf(o.Progress, "scale supernode: RSS %.0f MB (%.1f KB a device), %d fds, idle CPU %.1f%%; trying %d more\n", res.LoadedRSSMB, res.KBPerDevice, res.LoadedFDs, res.IdleCPU, o.Over)
		over, err := gens.report("go")
		if err != nil {
			return res, err
		}
		res.Over = &over
		res.OverRSSMB, res.OverFDs = sn.rssMB(), sn.fds()
	}
	check, err := gens.report("check")
	if err != nil {
		return res, err
	}
	res.Check = &check
	res.Alive = sn.alive()
	res.Load = loadAverage()
	res.RefusalLines, res.RefusalSample = sn.refusals()
	return res, nil
}

// generator is one load-generator process.
type generator struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	reports *json.Decoder
}

// generators share the devices between them.
type generators []*generator

// generatorsFor is how many generators n devices need, each holding
// LoadFDs descriptors a device under the hard limit on open files.
func generatorsFor(n int) int {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) != nil || l.Max == unix.RLIM_INFINITY {
		return 1
	}
	per := (int(min(l.Max, 1<<30)) - loadSpareFDs) / LoadFDs
	if per <= 0 {
		return 1
	}
	return (n + per - 1) / per
}

// share is generator i's part of n, of k generators.
func share(n, i, k int) int { return n/k + btoi(i < n%k) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// startGenerators starts o.Generators (or as many as the descriptors need)
// load generators, each with its share of the devices and its own range of
// loopback addresses; the generators started so far come back with an
// error too, to be stopped.
func startGenerators(ctx context.Context, o SupernodeOptions, target string) (generators, error) {
	k := o.Generators
	if k <= 0 {
		k = generatorsFor(o.Devices + o.Over)
	}
	k = max(1, min(k, o.Devices))
	var gens generators
	first := 0
	for i := 0; i < k; i++ {
		dev, over := share(o.Devices, i, k), share(o.Over, i, k)
		cmd := exec.CommandContext(ctx, o.Binary, "lab", "scale", "load", "--target", target,
			"--devices", strconv.Itoa(dev), "--over", strconv.Itoa(over), "--first", strconv.Itoa(first),
			"--nated", strconv.FormatFloat(o.NATed, 'f', -1, 64), "--republish", o.Republish.String())
		first += dev + over
		cmd.Stderr = o.Progress
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return gens, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return gens, err
		}
		if err := cmd.Start(); err != nil {
			return gens, fmt.Errorf("start load generator: %w", err)
		}
		gens = append(gens, &generator{cmd: cmd, stdin: stdin, reports: json.NewDecoder(bufio.NewReader(stdout))})
	}
	return gens, nil
}

// report sends line (unless "") to every generator and adds up the
// reports they answer with.
func (gs generators) report(line string) (LoadReport, error) {
	if line != "" {
		for _, g := range gs {
			fmt.Fprintln(g.stdin, line)
		}
	}
	sum := LoadReport{Errors: map[string]int{}}
	for i, g := range gs {
		var r LoadReport
		if err := g.reports.Decode(&r); err != nil {
			return sum, fmt.Errorf("load generator %d: %w", i+1, err)
		}
		sum.Stage = r.Stage
		sum.Tried += r.Tried
		sum.Connected += r.Connected
		sum.Refused += r.Refused
		sum.Reserved += r.Reserved
		sum.ResFailed += r.ResFailed
		sum.Published += r.Published
		sum.Served += r.Served
		sum.Asked += r.Asked
		sum.Seconds = max(sum.Seconds, r.Seconds)
		for k, v := range r.Errors {
			sum.Errors[k] += v
		}
	}
	return sum, nil
}

// stop closes the generators' control input (which ends them) and waits.
func (gs generators) stop() {
	for _, g := range gs {
		g.stdin.Close()
	}
	for _, g := range gs {
		g.cmd.Wait()
	}
}

// snProc is the supernode process under measurement.
type snProc struct {
	cmd *exec.Cmd
	log string
}

func startSupernode(ctx context.Context, o SupernodeOptions) (*snProc, string, error) {
	home := filepath.Join(o.Dir, "supernode")
	key, err := keyfile.LoadOrCreateEd25519(filepath.Join(home, "supernode.key"))
	if err != nil {
		return nil, "", err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := []string{"--home", home, "--log-level", "warn", "supernode", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port), "--stun", ""}
	if o.MaxDevices > 0 {
		args = append(args, "--max-devices", strconv.Itoa(o.MaxDevices))
	}
	logPath := filepath.Join(o.Dir, "supernode.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(o.Binary, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, "", fmt.Errorf("start supernode: %w", err)
	}
	lf.Close()
	sn := &snProc{cmd: cmd, log: logPath}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil || !sn.alive() {
			sn.stop()
			return nil, "", fmt.Errorf("supernode did not listen on 127.0.0.1:%d (see %s)", port, logPath)
		}
		time.Sleep(50 * time.Millisecond) // polling a port: there is no event to wait on
	}
	return sn, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, id), nil
}

func (s *snProc) proc(name string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", s.cmd.Process.Pid, name))
	return string(b)
}

// rssMB is the resident set in MiB.
func (s *snProc) rssMB() float64 {
	for _, line := range strings.Split(s.proc("status"), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func (s *snProc) fds() int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid))
	return len(es)
}

func (s *snProc) fdLimit() uint64 {
	for _, line := range strings.Split(s.proc("limits"), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line)
			v, _ := strconv.ParseUint(f[3], 10, 64)
			return v
		}
	}
	return 0
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times.
const clockTicks = 100

// cpuTicks is user + system CPU time in clock ticks.
func (s *snProc) cpuTicks() uint64 {
	st := s.proc("stat")
	i := strings.LastIndexByte(st, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(st[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return u + k
}

func (s *snProc) alive() bool {
	return s.cmd.ProcessState == nil && s.cmd.Process.Signal(syscall.Signal(0)) == nil
}

// refusals counts the supernode's refusal log lines and returns one.
func (s *snProc) refusals() (int, string) {
	b, _ := os.ReadFile(s.log)
	n, sample := 0, ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "refusing connections") {
			n++
			if sample == "" {
				sample = line
			}
		}
	}
	return n, sample
}

func (s *snProc) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// WriteTable prints r for a person.
func (r *SupernodeResult) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d load generator process(es)\n", max(1, r.Generators))
	fmt.Fprintf(&b, "devices | connected | RSS before → after | per device | idle CPU | fds before → after (limit) | reservations ok/refused\n")
	fmt.Fprintf(&b, "%d | %d in %.0f s | %.0f → %.0f MB | %.1f KB | %.1f%% of a core | %d → %d (%d) | %d/%d\n",
		r.Devices, r.Wave.Connected, r.Wave.Seconds, r.BaseRSSMB, r.LoadedRSSMB, r.KBPerDevice, r.IdleCPU,
		r.BaseFDs, r.LoadedFDs, r.FDLimit, r.Wave.Reserved, r.Wave.ResFailed)
	for _, e := range topErrors(r.Wave.Errors) {
		fmt.Fprintf(&b, "  first wave: %s\n", e)
	}
	if r.Over != nil {
		fmt.Fprintf(&b, "over the limit: %d more tried, %d connected, %d refused; RSS %.0f MB, %d fds; supernode refusal log lines %d\n",
			r.Over.Tried, r.Over.Connected, r.Over.Refused, r.OverRSSMB, r.OverFDs, r.RefusalLines)
		for _, e := range topErrors(r.Over.Errors) {
			fmt.Fprintf(&b, "  device saw: %s\n", e)
		}
		if r.RefusalSample != "" {
			fmt.Fprintf(&b, "  supernode said: %s\n", r.RefusalSample)
		}
	}
	if r.Check != nil {
		fmt.Fprintf(&b, "afterwards: %d of %d first-wave devices served their record; supernode alive: %v; load average %s\n",
			r.Check.Served, r.Check.Asked, r.Alive, r.Load)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
