package netlab

import (
	"net/netip"
	"strings"
	"testing"
)

// Tests here need no root; lab_test.go builds real namespaces.

func TestParseNATType(t *testing.T) {
	tests := []struct {
		in      string
		want    NATType
		wantErr bool
	}{
		{"public", Public, false},
		{"full-cone", FullCone, false},
		{"restricted", Restricted, false},
		{"port-restricted", PortRestricted, false},
		{"symmetric", Symmetric, false},
		{"udp-blocked", UDPBlocked, false},
		{"", "", true},
		{"Full-Cone", "", true},
		{"fullcone", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNATType(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseNATType(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "port-restricted") {
				t.Errorf("error %q does not list the valid names", err)
			}
		})
	}
}

func TestRouterRules(t *testing.T) {
	tests := []struct {
		nat     NATType
		want    []string
		notWant []string
	}{
		{FullCone,
			[]string{"masquerade\n", "dnat ip to meta l4proto . th dport map @in", "snat ip to meta l4proto . ip saddr . th sport map @out", `iifname "w" drop`, "ct status dnat accept", "th sport @in masquerade random"},
			[]string{"@seen", "tcp dport { 80, 443 }"}},
		{Restricted,
			[]string{"meta l4proto . th dport . ip saddr @seen dnat", "update @seen", "snat ip to", `iifname "w" drop`, "th sport @in masquerade random"},
			[]string{"tcp dport { 80, 443 }"}},
		{PortRestricted,
			[]string{"masquerade\n", `iifname "w" drop`},
			[]string{"dnat", "snat", "map @", "random"}},
		{Symmetric,
			[]string{"masquerade random\n", `iifname "w" drop`},
			[]string{"dnat", "snat", "map @"}},
		{UDPBlocked,
			[]string{`iifname "l" oifname "w" tcp dport { 80, 443 } accept`, "policy drop", "masquerade\n"},
			[]string{"dnat", "snat", `iifname "l" oifname "w" accept`}},
	}
	for _, tt := range tests {
		t.Run(string(tt.nat), func(t *testing.T) {
			rules, err := routerRules(tt.nat, "w", "l")
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.want {
				if !strings.Contains(rules, s) {
					t.Errorf("rules lack %q:\n%s", s, rules)
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(rules, s) {
					t.Errorf("rules contain %q:\n%s", s, rules)
				}
			}
		})
	}
	if _, err := routerRules(Public, "w", "l"); err == nil {
		t.Error("routerRules(Public) succeeded; a public host has no router")
	}
}

func TestNames(t *testing.T) {
	p := strings.Repeat("p", maxPrefixLen)
	end, port := vethNames(p, maxLinks-1)
	for _, n := range []string{end, port, bridgeName(p), lanBridgeName(p)} {
		if len(n) > 15 {
			t.Errorf("interface name %q is %d bytes; Linux allows 15", n, len(n))
		}
		if !strings.HasPrefix(n, p) {
			t.Errorf("interface name %q lacks the prefix", n)
		}
	}
	for _, ns := range []string{inetNamespace(p), hostNamespace(p, "a-b"), routerNamespace(p, "a-b")} {
		if runPrefix(ns) != p {
			t.Errorf("runPrefix(%q) = %q, want %q", ns, runPrefix(ns), p)
		}
	}
}

func TestValidation(t *testing.T) {
	prefixes := map[string]bool{"pl": true, "pl12ab34": true, "p": false, "pl12ab345": false, "1pl": false, "pl-x": false, "PL": false, "": false}
	for p, ok := range prefixes {
		if err := validPrefix(p); (err == nil) != ok {
			t.Errorf("validPrefix(%q) = %v, want ok=%v", p, err, ok)
		}
	}
	names := map[string]bool{"alice": true, "sn-1": true, "": false, "-x": false, "a b": false, "Bob": false, "a/b": false, strings.Repeat("x", maxNameLen+1): false}
	for n, ok := range names {
		if err := validName(n); (err == nil) != ok {
			t.Errorf("validName(%q) = %v, want ok=%v", n, err, ok)
		}
	}
	if err := validSweepPrefix(""); err == nil {
		t.Error("validSweepPrefix(\"\") succeeded; an empty prefix would sweep every lab")
	}
}

// TestAddressPlan checks that the lab only ever hands out documentation
// addresses (RFC 5737).
func TestAddressPlan(t *testing.T) {
	doc := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
	}
	isDoc := func(a netip.Addr) bool {
		for _, p := range doc {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	var addrs []netip.Addr
	addrs = append(addrs, publicGW, clientGW, nthAddr(publicNet, firstHost), nthAddr(publicNet, lastHost), nthAddr(clientNet, lastHost))
	for i := range maxLANs {
		lan := netip.PrefixFrom(nthAddr(lanNet, i<<(32-lanBits)), lanBits)
		if !lanNet.Contains(lan.Addr()) {
			t.Fatalf("LAN %d = %s is outside %s", i, lan, lanNet)
		}
		for j := 1; j <= 1+lanClients; j++ {
			a := nthAddr(lan, j)
			if !lan.Contains(a) || a == nthAddr(lan, 1<<(32-lanBits)-1) {
				t.Fatalf("LAN %s address %d = %s is not a host address", lan, j, a)
			}
			addrs = append(addrs, a)
		}
	}
	for _, a := range addrs {
		if !isDoc(a) {
			t.Errorf("%s is not a documentation address", a)
		}
	}
	if got := nthAddr(netip.MustParsePrefix("192.0.2.0/29"), 9); got != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("nthAddr = %s", got)
	}
}
