package netlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Every lab namespace is named "<run prefix>-<role>", and the run prefix
// holds no "-", so the run a namespace belongs to is the text before its
// first "-". The internet namespace's bridge carries an alias naming the
// owning process, so a later run can tell a live lab from a crashed one.

// ownerMarker formats the owner alias of a lab's bridge.
func ownerMarker(pid int, start uint64, run string) string {
	return fmt.Sprintf("parley-netlab pid=%d start=%d run=%s", pid, start, run)
}

var ownerRE = regexp.MustCompile(`alias parley-netlab pid=(\d+) start=(\d+) run=([0-9a-f]+)`)

type owner struct {
	pid   int
	start uint64
	run   string
}

// readOwner returns the owner recorded in the lab with run prefix p, or
// ok=false when there is no readable record.
func readOwner(ctx context.Context, log *slog.Logger, p string) (o owner, ok bool) {
	out, err := run(ctx, log, "", "ip", "-n", inetNamespace(p), "-o", "-d", "link", "show", "dev", bridgeName(p))
	if err != nil {
		return owner{}, false
	}
	m := ownerRE.FindStringSubmatch(out)
	if m == nil {
		return owner{}, false
	}
	pid, err1 := strconv.Atoi(m[1])
	start, err2 := strconv.ParseUint(m[2], 10, 64)
	if err1 != nil || err2 != nil {
		return owner{}, false
	}
	return owner{pid: pid, start: start, run: m[3]}, true
}

// alive reports whether the owner process still runs (same pid, same start
// time, so a recycled pid does not count).
func (o owner) alive() bool {
	start, err := processStart(o.pid)
	return err == nil && start == o.start
}

// processStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/<pid>/stat).
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("netlab: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("netlab: short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // f[0] is field 3
}

// runPrefix returns the run prefix of a namespace name.
func runPrefix(ns string) string {
	p, _, _ := strings.Cut(ns, "-")
	return p
}

// namespaces returns the named network namespaces whose run prefix starts
// with prefix, sorted.
func namespaces(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.Contains(n, "-") && strings.HasPrefix(runPrefix(n), prefix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// deleteNamespace does what `ip netns del` does: detach the bind mount that
// keeps the namespace alive and remove its name. Its interfaces (and their
// veth peers in other namespaces) go once no process is left inside.
// A namespace that is already gone is not an error.
func deleteNamespace(ns string) error {
	path := filepath.Join(netnsDir, ns)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netlab: delete namespace %s: unmount: %w", ns, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netlab: delete namespace %s: %w", ns, err)
	}
	return nil
}

// validSweepPrefix checks a sweep prefix: lowercase letters and digits only,
// so it can never match a namespace some other tool named.
func validSweepPrefix(prefix string) error {
	if prefix == "" || len(prefix) > maxPrefixLen || strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("netlab: invalid sweep prefix %q (want 1-%d lowercase letters and digits)", prefix, maxPrefixLen)
	}
	return nil
}

// Sweep deletes every lab namespace whose run prefix starts with prefix
// ("pl" removes every run with the default prefixes; a lab's Prefix removes
// that run), whether its lab is alive or not. Use it for leftovers of a
// killed run; SweepStale spares labs whose process still runs.
//
// Processes still running inside a swept namespace keep it alive,
// unnamed and cut off (its veth peers vanish with the other namespaces),
// until they exit; Sweep does not kill them.
func Sweep(prefix string) error {
	if err := validSweepPrefix(prefix); err != nil {
		return err
	}
	nss, err := namespaces(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss {
		errs = append(errs, deleteNamespace(ns))
	}
	return errors.Join(errs...)
}

// SweepStale deletes the lab runs whose run prefix starts with prefix and
// whose owning process is gone (or unknown, as after a crash while the lab
// was being built). Labs of live processes, this one included, are left
// alone, so it is safe to call while other labs run, except in the few
// milliseconds in which New has made a lab's internet namespace but not
// yet marked its owner.
func SweepStale(prefix string) error {
	if err := validSweepPrefix(prefix); err != nil {
		return err
	}
	nss, err := namespaces(prefix)
	if err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	alive := map[string]bool{}
	var errs []error
	for _, ns := range nss {
		p := runPrefix(ns)
		a, seen := alive[p]
		if !seen {
			o, ok := readOwner(context.Background(), log, p)
			a = ok && o.alive()
			alive[p] = a
		}
		if !a {
			errs = append(errs, deleteNamespace(ns))
		}
	}
	return errors.Join(errs...)
}
