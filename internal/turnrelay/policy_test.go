package turnrelay

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestPeerPolicy(t *testing.T) {
	none, err := NewPeerPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := NewPeerPolicy([]netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::ffff:10.1.0.0/112"), // a mapped prefix means 10.1.0.0/16
		netip.MustParsePrefix("0.0.0.0/0"),           // even "everything" does not allow the hard ranges
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip         string
		okNone     bool // with no allowed prefixes
		okLab      bool // with the lab's prefixes
		wantInName string
	}{
		{"8.8.8.8", true, true, ""},
		{"2001:4860:4860::8888", true, true, ""},
		{"0.0.0.0", false, false, "unspecified"},
		{"::", false, false, "unspecified"},
		{"::1", false, false, "loopback"}, // the lab allows IPv4 only
		{"127.0.0.1", false, true, "loopback"},
		{"127.255.255.254", false, true, "loopback"},
		{"::ffff:127.0.0.1", false, true, "loopback"},
		{"169.254.169.254", false, true, "link-local"},
		{"::ffff:169.254.169.254", false, true, "link-local"},
		{"10.0.0.1", false, true, "private"},
		{"10.1.2.3", false, true, "private"},
		{"172.16.0.1", false, true, "private"},
		{"172.31.255.255", false, true, "private"},
		{"172.32.0.1", true, true, ""},
		{"192.168.1.1", false, true, "private"},
		{"100.64.0.1", false, true, "CGNAT"},
		{"100.127.255.255", false, true, "CGNAT"},
		{"100.128.0.1", true, true, ""},
		{"192.0.2.1", false, true, "TEST-NET-1"},
		{"198.51.100.7", false, true, "TEST-NET-2"},
		{"203.0.113.9", false, true, "TEST-NET-3"},
		{"198.18.0.1", false, true, "benchmarking"},
		{"224.0.0.1", false, false, "multicast"},
		{"239.255.255.250", false, false, "multicast"},
		{"255.255.255.255", false, false, "broadcast"},
		{"240.0.0.1", false, true, "reserved"},
		{"fc00::1", false, false, "unique local"},
		{"fd00::2", false, false, "unique local"},
		{"fe80::1", false, false, "link-local"},
		{"fe80::1%eth0", false, false, "link-local"},
		{"ff02::1", false, false, "multicast"},
		{"ff05::1:3", false, false, "multicast"},
		{"::127.0.0.1", false, false, "IPv4-compatible"},
		{"64:ff9b::a00:1", false, false, "NAT64"},
		{"2001:db8::1", false, false, "documentation"},
		{"2002:a00:1::1", false, false, "6to4"},
		{"2001:0:4136:e378::1", false, false, "Teredo"},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			for _, p := range []struct {
				name string
				pol  *PeerPolicy
				ok   bool
			}{{"default", none, tc.okNone}, {"lab", lab, tc.okLab}} {
				err := p.pol.Check(ip)
				if (err == nil) != p.ok {
					t.Errorf("%s policy: Check(%s) = %v, want allowed=%v", p.name, ip, err, p.ok)
				}
				if err != nil && !errors.Is(err, ErrPeerRefused) {
					t.Errorf("%s policy: error %v is not ErrPeerRefused", p.name, err)
				}
				if err != nil && p.name == "default" && !strings.Contains(err.Error(), tc.wantInName) {
					t.Errorf("%s policy: error %q does not name %q", p.name, err, tc.wantInName)
				}
				if err2 := p.pol.CheckIP(net.IP(ip.AsSlice())); (err2 == nil) != (err == nil) {
					t.Errorf("%s policy: CheckIP disagrees with Check: %v vs %v", p.name, err2, err)
				}
			}
		})
	}
	if none.CheckIP(nil) == nil || none.CheckIP(net.IP{1, 2, 3}) == nil {
		t.Error("malformed net.IP allowed")
	}
	// A 16-byte net.IP holding an IPv4 address is the IPv4 address.
	if none.CheckIP(net.ParseIP("127.0.0.1")) == nil {
		t.Error("16-byte 127.0.0.1 allowed")
	}
}

func TestParseHelpers(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi uint16
		ok     bool
	}{
		{"49152-65535", 49152, 65535, true},
		{" 50000-50000 ", 50000, 50000, true},
		{"50000", 0, 0, false},
		{"60000-50000", 0, 0, false},
		{"80-90", 0, 0, false},
		{"50000-70000", 0, 0, false},
		{"a-b", 0, 0, false},
	} {
		lo, hi, err := ParsePortRange(tc.in)
		if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", tc.in, lo, hi, err)
		}
	}
	ps, err := ParseCIDRs([]string{"192.0.2.0/24", "2001:db8::/32", "127.0.0.1"})
	if err != nil || len(ps) != 3 || ps[2].String() != "127.0.0.1/32" {
		t.Errorf("ParseCIDRs = %v, %v", ps, err)
	}
	if _, err := ParseCIDRs([]string{"192.0.2.0/33"}); err == nil {
		t.Error("ParseCIDRs accepted /33")
	}
}

func TestConfigRefusesContradictions(t *testing.T) {
	base := func() Config {
		return Config{UDPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{loopback4}, Secret: testSecret, Logger: testLogger()}
	}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no listener", func(c *Config) { c.UDPAddr = "" }},
		{"no secret", func(c *Config) { c.Secret = "" }},
		{"short secret", func(c *Config) { c.Secret = "short" }},
		{"no relay IP", func(c *Config) { c.RelayIPs = nil }},
		{"unspecified relay IP", func(c *Config) { c.RelayIPs = []netip.Addr{netip.IPv4Unspecified()} }},
		{"multicast relay IP", func(c *Config) { c.RelayIPs = []netip.Addr{netip.MustParseAddr("224.0.0.1")} }},
		{"two IPv4 relay IPs", func(c *Config) { c.RelayIPs = append(c.RelayIPs, netip.MustParseAddr("127.0.0.2")) }},
		{"bind IPs do not match", func(c *Config) { c.RelayBindIPs = []netip.Addr{loopback4, loopback6} }},
		{"bind IP of another family", func(c *Config) { c.RelayBindIPs = []netip.Addr{loopback6} }},
		{"only MinPort", func(c *Config) { c.MinPort = 50000 }},
		{"MinPort above MaxPort", func(c *Config) { c.MinPort, c.MaxPort = 60000, 50000 }},
		{"cert without key", func(c *Config) { c.TLSAddr, c.TLSCertFile = "127.0.0.1:0", "cert.pem" }},
		{"TLS address without cert", func(c *Config) { c.TLSAddr = "127.0.0.1:0" }},
		{"cert without TLS address", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "c.pem", "k.pem" }},
		{"files and TLSConfig", func(c *Config) {
			c.TLSAddr, c.TLSCertFile, c.TLSKeyFile, c.TLSConfig = "127.0.0.1:0", "c.pem", "k.pem", selfSignedTLS(t)
		}},
		{"negative quota", func(c *Config) { c.MaxAllocationsPerUser = -5 }},
		{"tiny byte rate", func(c *Config) { c.MaxBytesPerSecond = 100 }},
		{"lifetime over an hour", func(c *Config) { c.AllocationLifetime = 2 * time.Hour }},
		{"tiny max duration", func(c *Config) { c.MaxAllocationDuration = time.Millisecond }},
		{"sub-second credential TTL", func(c *Config) { c.MaxCredentialTTL = time.Millisecond }},
		{"invalid allowed prefix", func(c *Config) { c.AllowCIDRs = []netip.Prefix{{}} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			if s, err := New(c); err == nil {
				s.Close()
				t.Fatal("New accepted the config")
			}
		})
	}
	s, err := New(base())
	if err != nil {
		t.Fatalf("base config refused: %v", err)
	}
	s.Close()
}
