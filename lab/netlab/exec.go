package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Sentinel errors.
var (
	// ErrUnavailable wraps the reason Available gives: not root, or ip or nft
	// missing.
	ErrUnavailable = errors.New("netlab: network namespace lab unavailable")
	// ErrClosed is returned by a Lab's methods after Close.
	ErrClosed = errors.New("netlab: lab closed")
	// ErrPrefixInUse is returned by New when a live process owns namespaces
	// with the requested prefix.
	ErrPrefixInUse = errors.New("netlab: prefix in use")
	// ErrExhausted is returned when an address range of the lab is full.
	ErrExhausted = errors.New("netlab: addresses exhausted")
)

// commandTimeout bounds every ip or nft command, whatever the caller's
// context says; each finishes in milliseconds on a healthy machine.
const commandTimeout = 20 * time.Second

// Available reports whether this process can build a lab: it must run as
// root and find the ip (iproute2) and nft (nftables) commands. The error
// wraps ErrUnavailable and says what is missing, so tests can
// t.Skip(err).
func Available() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("%w: needs root to create network namespaces (running as uid %d)", ErrUnavailable, uid)
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			pkg := map[string]string{"ip": "iproute2", "nft": "nftables"}[bin]
			return fmt.Errorf("%w: %s not found (install the %s package): %v", ErrUnavailable, bin, pkg, err)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: kernel without network namespaces: %v", ErrUnavailable, err)
	}
	return nil
}

// run runs one command with stdin (if not empty) and returns its combined
// output; the error carries the command line and its output.
func run(ctx context.Context, log *slog.Logger, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	line := name + " " + strings.Join(args, " ")
	log.Debug("run", "cmd", line, "took", time.Since(start), "err", err)
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", line, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ipBatch runs ip commands (one per element, without the leading "ip") in
// one process, inside namespace ns, or in the calling namespace when ns is
// empty (only for commands that name their target namespaces).
func ipBatch(ctx context.Context, log *slog.Logger, ns string, cmds ...string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	_, err := run(ctx, log, strings.Join(cmds, "\n")+"\n", "ip", args...)
	return err
}
