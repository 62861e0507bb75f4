package turnrelay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ErrPeerRefused is returned for a peer address the relay never sends to.
var ErrPeerRefused = errors.New("peer address refused by relay policy")

// refusedRange is a block of addresses a relay must not send to unless the
// operator allows it: loops back into the host or its LAN, reaches cloud
// metadata services, fans out (multicast), or is not a unicast host at all.
type refusedRange struct {
	prefix netip.Prefix
	name   string
	// hard ranges are refused even inside an AllowCIDRs prefix: no peer can
	// ever be there.
	hard bool
}

// refused lists the IANA special-purpose ranges (RFC 6890 and its registry)
// a TURN peer cannot legitimately be in. IPv4-mapped IPv6 addresses are
// unmapped before the check, so ::ffff:127.0.0.1 is 127.0.0.1 here.
var refused = func() []refusedRange {
	var rs []refusedRange
	add := func(cidr, name string, hard bool) {
		rs = append(rs, refusedRange{netip.MustParsePrefix(cidr), name, hard})
	}
	// IPv4
	add("0.0.0.0/8", "this network (RFC 791)", false)
	add("0.0.0.0/32", "unspecified", true)
	add("10.0.0.0/8", "private (RFC 1918)", false)
	add("100.64.0.0/10", "shared CGNAT (RFC 6598)", false)
	add("127.0.0.0/8", "loopback", false)
	add("169.254.0.0/16", "link-local (RFC 3927), incl. cloud metadata", false)
	add("172.16.0.0/12", "private (RFC 1918)", false)
	add("192.0.0.0/24", "IETF protocol assignments (RFC 6890)", false)
	add("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)", false)
	add("192.88.99.0/24", "6to4 relay anycast (RFC 7526)", false)
	add("192.168.0.0/16", "private (RFC 1918)", false)
	add("198.18.0.0/15", "benchmarking (RFC 2544)", false)
	add("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)", false)
	add("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)", false)
	add("224.0.0.0/4", "multicast", true)
	add("240.0.0.0/4", "reserved (RFC 1112)", false)
	add("255.255.255.255/32", "limited broadcast", true)
	// IPv6
	add("::/128", "unspecified", true)
	add("::1/128", "loopback", false)
	add("::/96", "IPv4-compatible (deprecated, RFC 4291)", false)
	add("::ffff:0:0:0/96", "IPv4-translated (RFC 2765)", false)
	add("64:ff9b::/96", "NAT64 well-known prefix (RFC 6052)", false)
	add("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)", false)
	add("100::/64", "discard-only (RFC 6666)", false)
	add("2001::/23", "IETF protocol assignments incl. Teredo (RFC 2928)", false)
	add("2001:db8::/32", "documentation (RFC 3849)", false)
	add("2002::/16", "6to4 (RFC 3056)", false)
	add("3fff::/20", "documentation (RFC 9637)", false)
	add("5f00::/16", "SRv6 SIDs (RFC 9602)", false)
	add("fc00::/7", "unique local (RFC 4193)", false)
	add("fe80::/10", "link-local", false)
	add("fec0::/10", "site-local (deprecated, RFC 3879)", false)
	add("ff00::/8", "multicast", true)
	// Most specific first, so an address is named by its narrowest range.
	slices.SortStableFunc(rs, func(a, b refusedRange) int { return b.prefix.Bits() - a.prefix.Bits() })
	return rs
}()

// PeerPolicy decides which peer addresses an allocation may reach: every
// address outside the refused special-purpose ranges, plus those the
// operator allowed. Unspecified, multicast and broadcast addresses are
// refused even when allowed. A PeerPolicy is immutable and safe for
// concurrent use.
type PeerPolicy struct {
	allow []netip.Prefix
}

// NewPeerPolicy returns the policy that also allows the prefixes in allow
// (IPv4-mapped prefixes are unmapped).
func NewPeerPolicy(allow []netip.Prefix) (*PeerPolicy, error) {
	p := &PeerPolicy{}
	for _, a := range allow {
		if !a.IsValid() {
			return nil, fmt.Errorf("allowed peer prefix %v is not valid", a)
		}
		if a.Addr().Is4In6() {
			bits := a.Bits() - 96
			if bits < 0 {
				return nil, fmt.Errorf("allowed peer prefix %v: an IPv4-mapped prefix needs at least /96", a)
			}
			a = netip.PrefixFrom(a.Addr().Unmap(), bits)
		}
		p.allow = append(p.allow, a.Masked())
	}
	return p, nil
}

// Check returns nil when ip may be a peer, else an error wrapping
// ErrPeerRefused that names the range.
func (p *PeerPolicy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("%w: no address", ErrPeerRefused)
	}
	ip = ip.Unmap().WithZone("")
	allowed := false
	for _, a := range p.allow {
		if a.Contains(ip) {
			allowed = true
			break
		}
	}
	for _, r := range refused {
		if r.prefix.Contains(ip) && (r.hard || !allowed) {
			return fmt.Errorf("%w: %s is %s", ErrPeerRefused, ip, r.name)
		}
	}
	return nil
}

// CheckIP is Check for a net.IP (nil or malformed is refused).
func (p *PeerPolicy) CheckIP(ip net.IP) error {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return fmt.Errorf("%w: %d-byte address", ErrPeerRefused, len(ip))
	}
	return p.Check(a)
}

// ParseCIDRs parses prefixes such as "198.51.100.0/24" or "2001:db8::/32";
// a bare address is the prefix of that one address.
func ParseCIDRs(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("CIDR %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("CIDR %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePortRange parses "MIN-MAX" (inclusive, 1024 to 65535).
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return 0, 0, fmt.Errorf("port range %q: want MIN-MAX", s)
	}
	l, err1 := strconv.ParseUint(a, 10, 16)
	h, err2 := strconv.ParseUint(b, 10, 16)
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("port range %q: want MIN-MAX with ports 1024 to 65535", s)
	case l < 1024:
		return 0, 0, fmt.Errorf("port range %q: ports below 1024 are not for relaying", s)
	case l > h:
		return 0, 0, fmt.Errorf("port range %q: MIN is above MAX", s)
	}
	return uint16(l), uint16(h), nil
}
