package netlab

import (
	"context"
	"fmt"
)

// BlockUDP drops every UDP datagram between a's and b's public addresses
// where the internet carries them (its bridge, in the bridge family of
// nftables, so routed and bridged traffic alike), until the returned
// function is called. Traffic of either with anyone else (the supernode,
// a relay) is untouched: a call between them finds no direct path while
// the block holds, and one when it is lifted. Lifting twice, or after
// Close, is harmless.
func (l *Lab) BlockUDP(ctx context.Context, a, b *Host) (unblock func(context.Context) error, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if a == nil || b == nil || a.lab != l || b.lab != l {
		return nil, fmt.Errorf("netlab: block UDP: %v and %v are not hosts of this lab", a, b)
	}
	l.nBlock++
	table := fmt.Sprintf("parley_block_%d", l.nBlock)
	ns := inetNamespace(l.prefix)
	rules := fmt.Sprintf(`table bridge %[1]s {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ip saddr %[2]s ip daddr %[3]s meta l4proto udp drop
		ip saddr %[3]s ip daddr %[2]s meta l4proto udp drop
	}
}
`, table, a.PublicIP, b.PublicIP)
	if _, err := run(ctx, l.log, rules, "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		return nil, fmt.Errorf("netlab: block UDP between %s and %s: %w", a.Name, b.Name, err)
	}
	l.log.Info("UDP blocked", "a", a.PublicIP, "b", b.PublicIP)
	lifted := false
	return func(ctx context.Context) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if lifted || l.closed {
			return nil
		}
		lifted = true
		if _, err := run(ctx, l.log, "", "ip", "netns", "exec", ns, "nft", "delete", "table", "bridge", table); err != nil {
			return fmt.Errorf("netlab: unblock UDP between %s and %s: %w", a.Name, b.Name, err)
		}
		l.log.Info("UDP unblocked", "a", a.PublicIP, "b", b.PublicIP)
		return nil
	}, nil
}
