package natlab

import (
	"context"
	"errors"
	"os/exec"
	"time"
)

// This file exports the pieces of natlab other lab harnesses (lab/outage)
// build on: running parley processes that die with this one, reading
// the servers' addresses, and judging recordings. They are thin wrappers,
// so natlab's own code keeps its unexported names.

// Proc is a parley process started by StartProc: its stdout is kept line
// by line and copied to DIR/NAME.out, its stderr goes to DIR/NAME.log, and
// it is SIGKILLed if this process dies.
type Proc struct{ p *proc }

// StartProc starts cmd as a lab process (see Proc).
func StartProc(cmd *exec.Cmd, dir, name string) (*Proc, error) {
	p, err := startProc(cmd, dir, name)
	if err != nil {
		return nil, err
	}
	return &Proc{p}, nil
}

// WaitLine waits up to timeout for a stdout line for which match is true.
func (p *Proc) WaitLine(ctx context.Context, timeout time.Duration, what string, match func(string) bool) (int, string, error) {
	return p.p.waitLine(ctx, timeout, what, match)
}

// WaitReady waits up to timeout for a daemon's "ready" line.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	_, _, err := p.p.waitLine(ctx, timeout, `"ready"`, func(s string) bool { return s == "ready" })
	return err
}

// Multiaddrs waits for a supernode or relay to print its multiaddrs.
func (p *Proc) Multiaddrs(ctx context.Context) ([]string, error) { return multiaddrs(ctx, p.p) }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool { return p.p.exited() }

// Kill SIGKILLs the process and waits (bounded) for it.
func (p *Proc) Kill() error { return p.p.kill() }

// Stop sends SIGTERM, then SIGKILL after a grace period.
func (p *Proc) Stop() error { return p.p.stop() }

// LogPath is the file holding the process's stderr.
func (p *Proc) LogPath() string { return p.p.logPath }

// Tail returns the last n lines of the process's stderr.
func (p *Proc) Tail(n int) string { return p.p.tail(n) }

// Spawn starts cmd so that it dies with this process (PR_SET_PDEATHSIG
// from a thread that never exits); the caller waits for it.
func Spawn(cmd *exec.Cmd) error { return spawn(cmd) }

// LabCIDRs are the lab's address ranges, which TURN servers must be
// allowed to relay to.
func LabCIDRs() []string { return append([]string(nil), labCIDRs...) }

// Server ports: a udp-blocked client reaches only TCP 80 and 443.
const (
	Libp2pTCPPort = libp2pTCPPort
	TURNTCPPort   = turnTCPPort
	QUICPort      = quicPort
	STUNPort      = stunPort
	TURNUDPPort   = turnUDPPort
)

// RandomSecret returns a fresh TURN REST secret.
func RandomSecret() string { return randomSecret() }

// WaitRecording waits (bounded) until the WAV at path has been closed by
// its writer and returns its samples (48 kHz mono).
func WaitRecording(ctx context.Context, path string) ([]int16, error) {
	return waitRecording(ctx, path)
}

// ReadUnclosedWAV reads up to limit samples of a WAV its writer never
// closed.
func ReadUnclosedWAV(path string, limit int) []int16 {
	_, s := readUnclosedWAV(path, limit)
	return s
}

// FrameMS is the length of the frames SilentFrames judges.
const FrameMS = 20

// SilentFrames returns, for each 20 ms frame of s, whether it is silent
// (below about -50 dBFS), as the fault analysis judges a gap.
func SilentFrames(s []int16) []bool {
	out := make([]bool, len(s)/frame)
	for i := range out {
		out[i] = rms(s[i*frame:(i+1)*frame]) < silenceRMS
	}
	return out
}

// Parallel runs f for every item at once, at most limit at a time (0: no
// limit), and returns their errors joined. The lab starts processes this
// way: daemons, identity set-ups.
func Parallel[T any](items []T, limit int, f func(T) error) error {
	errs := make(chan error, len(items))
	var sem chan struct{}
	if limit > 0 {
		sem = make(chan struct{}, limit)
	}
	for _, it := range items {
		go func() {
			if sem != nil {
				sem <- struct{}{}
				defer func() { <-sem }()
			}
			errs <- f(it)
		}()
	}
	var err error
	for range items {
		err = errors.Join(err, <-errs)
	}
	return err
}
