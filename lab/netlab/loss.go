package netlab

import (
	"context"
	"fmt"
)

// lossTable is the nftables table SetLoss keeps, apart from the NAT's own
// table so that FlushNAT and the NAT rules never touch it.
const lossTable = "parley_loss"

// SetLoss makes h's NAT router drop pct percent of the UDP datagrams it
// forwards, in both directions, each independently at random (nftables
// `numgen random mod 100 < pct drop`; the kernels this lab runs on have no
// netem). For a host without a router (NAT type Public) the rule sits in
// the host's own namespace, on what it sends and receives. pct 0 removes
// the loss; pct must be in [0, 100].
func (l *Lab) SetLoss(ctx context.Context, h *Host, pct int) error {
	if pct < 0 || pct > 100 {
		return fmt.Errorf("netlab: loss %d%% outside [0, 100]", pct)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if h == nil || h.lab != l {
		return fmt.Errorf("netlab: set loss: %v is not a host of this lab", h)
	}
	ns := h.Namespace
	if h.router != nil {
		ns = h.router.ns
	}
	if _, err := run(ctx, l.log, lossRules(pct, h.router != nil), "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("netlab: set %d%% loss at %s: %w", pct, ns, err)
	}
	l.log.Info("loss set", "namespace", ns, "percent", pct)
	return nil
}

// lossRules returns the nft script that replaces the loss table: on the
// forward hook in a router, on input and output in a host.
func lossRules(pct int, router bool) string {
	// "add" then "delete" makes the delete succeed whether or not the
	// table existed, so the script is idempotent.
	s := fmt.Sprintf("add table inet %s\ndelete table inet %s\n", lossTable, lossTable)
	if pct == 0 {
		return s
	}
	rule := fmt.Sprintf("meta l4proto udp numgen random mod 100 < %d drop", pct)
	s += fmt.Sprintf("table inet %s {\n", lossTable)
	hooks := []string{"input", "output"}
	if router {
		hooks = []string{"forward"}
	}
	for _, hook := range hooks {
		s += fmt.Sprintf("\tchain %s {\n\t\ttype filter hook %s priority -10; policy accept;\n\t\t%s\n\t}\n", hook, hook, rule)
	}
	return s + "}\n"
}
