package main

import (
	"strings"
	"testing"

	"github.com/parley-net/parley/node"
)

// TestPingLines: each probe is a line naming its path, and a change of
// path (relay to direct after hole punching) is said as it happens.
func TestPingLines(t *testing.T) {
	relayed := node.PingResult{Device: "12D3KooWLRPJAA5o6Z6Y1uLHTKBLWXXdD3rpqFN5iREM1tjFfvY4", Tier: "relay",
		Via: "12D3KooWGRUVh6Ez3cv6WKsSVcgzu3PhdZwFavqGWyTBmNyvTx6r", ViaTier: node.TierSupernode, Transport: "quic-v1", RTTMS: 3.4,
		Remote: "/ip4/203.0.113.10/udp/4100/quic-v1/p2p/12D3KooWGRUVh6Ez3cv6WKsSVcgzu3PhdZwFavqGWyTBmNyvTx6r/p2p-circuit"}
	direct := node.PingResult{Device: relayed.Device, Tier: node.TierDirect, Transport: "quic-v1", RTTMS: 1.1, Remote: "/ip4/198.51.100.14/udp/40310/quic-v1"}

	first := pingLine(1, relayed, "")
	if !strings.Contains(first, "relay (circuit via supernode …mNyvTx6r)") || strings.Contains(first, "changed") || !strings.Contains(first, "3.4 ms") {
		t.Errorf("first probe: %q", first)
	}
	second := pingLine(2, direct, pathName(relayed))
	if !strings.Contains(second, "direct") || !strings.Contains(second, "path changed: relay (circuit via supernode …mNyvTx6r) -> direct") {
		t.Errorf("second probe: %q", second)
	}
	if same := pingLine(3, direct, pathName(direct)); strings.Contains(same, "changed") {
		t.Errorf("same path said to change: %q", same)
	}
	if failed := pingLine(4, node.PingResult{Device: relayed.Device, Error: "ping …: no answer"}, "direct"); !strings.Contains(failed, "no answer") {
		t.Errorf("failed probe: %q", failed)
	}
}
