package natlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// proc is one parley process of the lab: its stdout is kept line by line
// (and copied to a file), its stderr goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	outPath string
	logPath string

	mu     sync.Mutex
	lines  []string
	notify chan struct{} // closed and replaced on every new line and at exit

	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
}

// startProc starts cmd with stdout kept in p and copied to dir/name.out and
// stderr in dir/name.log.
func startProc(cmd *exec.Cmd, dir, name string) (*proc, error) {
	p := &proc{name: name, cmd: cmd, outPath: dir + "/" + name + ".out", logPath: dir + "/" + name + ".log",
		notify: make(chan struct{}), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	outf, err := os.Create(p.outPath)
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		outf.Close()
		return nil, err
	}
	if err := spawn(cmd); err != nil {
		logf.Close()
		outf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logf.Close() // the child holds its own copy
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(outf, line)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stdout)
		outf.Close()
		p.waitErr = cmd.Wait()
		close(p.done)
		p.mu.Lock()
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}()
	return p, nil
}

// snapshot returns the stdout lines so far and a channel closed when there
// are more (or the process exits).
func (p *proc) snapshot() ([]string, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines[:len(p.lines):len(p.lines)], p.notify
}

// waitLine waits up to timeout for a stdout line for which match is true
// and returns its index and text.
func (p *proc) waitLine(ctx context.Context, timeout time.Duration, what string, match func(string) bool) (int, string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	seen := 0
	for {
		lines, more := p.snapshot()
		for ; seen < len(lines); seen++ {
			if match(lines[seen]) {
				return seen, lines[seen], nil
			}
		}
		select {
		case <-p.done:
			// Lines printed just before exit are already in lines, unless
			// they raced with this check.
			if l, _ := p.snapshot(); len(l) > seen {
				continue
			}
			return 0, "", fmt.Errorf("%s exited (%v) before printing %s; see %s", p.name, p.waitErr, what, p.logPath)
		case <-more:
		case <-t.C:
			return 0, "", fmt.Errorf("%s printed no %s within %s; see %s", p.name, what, timeout, p.logPath)
		case <-ctx.Done():
			return 0, "", fmt.Errorf("waiting for %s to print %s: %w", p.name, what, ctx.Err())
		}
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits (bounded) for the process to be reaped.
func (p *proc) kill() error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
		return fmt.Errorf("%s (pid %d) still running %s after SIGKILL", p.name, p.cmd.Process.Pid, stopGrace)
	}
}

// stop asks the process to exit with SIGTERM and kills it after stopGrace.
func (p *proc) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	return p.kill()
}

// tail returns the last n lines of the process's log file.
func (p *proc) tail(n int) string { return tailFile(p.logPath, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Children are started from one OS thread that never exits, so that
// their parent-death signal, which Linux ties to the thread that forked
// them (PR_SET_PDEATHSIG), fires only when this process dies. A thread
// that forked them and later exited, such as one netlab's Host.Do throws
// away, would kill them mid-run.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnJob
)

type spawnJob struct {
	cmd *exec.Cmd
	err chan error
}

// spawn starts cmd so that it is killed when this process dies, even by
// SIGKILL: processes left in a lab's namespaces would keep them alive
// after SweepStale.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnJob)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for j := range spawnReq {
				j.err <- j.cmd.Start()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	errc := make(chan error, 1)
	spawnReq <- spawnJob{cmd, errc}
	return <-errc
}
