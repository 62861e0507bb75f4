package natlab

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/lab/netlab"
	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/node/netcheck"
)

// TestNetcheckAndPing runs `parley netcheck --json` on hosts behind the
// lab's NATs and checks the mapping behaviour each reports: one address
// for every STUN destination (the supernode's STUN and TURN ports, the
// cloud relay's TURN port, on another IP) without a NAT or behind an
// address-restricted one, a different one per destination behind a
// symmetric NAT, and no UDP at all, but TURN over TCP, on a udp-blocked
// host. Then `parley ping` between two NATed hosts gets answers.
func TestNetcheckAndPing(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	types := []netlab.NATType{netlab.Public, netlab.Restricted, netlab.Symmetric, netlab.UDPBlocked}
	opts := Options{Binary: parleyBin, Types: types, Progress: testWriter{t}}
	if d := os.Getenv("NATLAB_DIR"); d != "" {
		opts.Dir = d
	}
	l, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()

	for _, tc := range []struct {
		nat     netlab.NATType
		udp     bool
		mapping string
	}{
		{netlab.Public, true, netcheck.MappingIndependent},
		{netlab.Restricted, true, netcheck.MappingIndependent},
		{netlab.Symmetric, true, netcheck.MappingDependent},
		{netlab.UDPBlocked, false, netcheck.MappingNoUDP},
	} {
		d := l.devices[tc.nat][0]
		out, err := l.cli(ctx, 30*time.Second, "--home", d.home, "netcheck", "--json")
		if err != nil {
			t.Errorf("%s: netcheck: %v\n%s", tc.nat, err, out)
			continue
		}
		var r netcheck.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Errorf("%s: netcheck --json: %v\n%s", tc.nat, err, out)
			continue
		}
		t.Logf("%s: udp %v mapping %s mapped %s public %v; TURN udp %v tcp %v", tc.nat, r.UDP, r.Mapping, r.MappedAddr, r.Public,
			r.TURNReachable("", "udp"), r.TURNReachable("", "tcp"))
		if r.UDP != tc.udp || r.Mapping != tc.mapping {
			t.Errorf("%s: UDP %v, mapping %s; want UDP %v, %s\n%s", tc.nat, r.UDP, r.Mapping, tc.udp, tc.mapping, out)
		}
		if len(r.STUN) < 3 {
			t.Errorf("%s: %d STUN destinations, want the supernode's two and the cloud relay's", tc.nat, len(r.STUN))
		}
		if tc.nat == netlab.Public && !r.Public {
			t.Errorf("public host: mapped %s is not its own address", r.MappedAddr)
		}
		if tc.nat != netlab.Public && r.Public {
			t.Errorf("%s: reported as public (mapped %s)", tc.nat, r.MappedAddr)
		}
		for _, tier := range []string{node.TierSupernode, node.TierCloud} {
			if !r.TURNReachable(tier, "tcp") {
				t.Errorf("%s: TURN over TCP at the %s tier not reachable: %+v", tc.nat, tier, r.TURN)
			}
			if r.TURNReachable(tier, "udp") != tc.udp {
				t.Errorf("%s: TURN over UDP at the %s tier reachable %v, want %v", tc.nat, tier, !tc.udp, tc.udp)
			}
		}
	}

	// ping: a restricted host to a symmetric one (relayed signalling first,
	// maybe punched), and a udp-blocked host to a public one.
	for _, p := range [][2]netlab.NATType{{netlab.Restricted, netlab.Symmetric}, {netlab.UDPBlocked, netlab.Public}} {
		from, to := l.devices[p[0]][0], l.devices[p[1]][1]
		out, err := l.cli(ctx, 60*time.Second, "--home", from.home, "ping", to.handle, "--count", "4", "--interval", "1s", "--json")
		if err != nil {
			t.Errorf("ping %s -> %s: %v\n%s", from.handle, to.handle, err, out)
			continue
		}
		answered := 0
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var r node.PingResult
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			if r.Tier == "relay" && r.ViaTier == "" {
				t.Errorf("ping %s -> %s: relayed by %s, which is neither the supernode nor the cloud relay", from.handle, to.handle, r.Via)
			}
			if r.Error == "" {
				answered++
				t.Logf("ping %s -> %s: %s via %s %q over %s, %.1f ms", from.handle, to.handle, r.Tier, r.ViaTier, r.Via, r.Transport, r.RTTMS)
			}
		}
		if answered == 0 {
			t.Errorf("ping %s -> %s: no probe answered\n%s", from.handle, to.handle, out)
		}
	}
}
