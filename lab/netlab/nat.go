package netlab

import (
	"fmt"
	"strings"
)

// NATType is the behaviour of the router between a client host and the
// internet, in the terms of RFC 4787 (mapping and filtering) and of the
// classic STUN names (RFC 3489 section 5).
type NATType string

// The NAT types a lab can build. Their nftables rules are in the package
// comment and in routerRules.
const (
	// Public puts the host directly on the internet bridge: no NAT, no
	// firewall.
	Public NATType = "public"
	// FullCone maps endpoint-independently and filters
	// endpoint-independently: once a LAN endpoint has sent anything out,
	// anyone may reach it through its mapping.
	FullCone NATType = "full-cone"
	// Restricted (address-restricted cone) maps endpoint-independently and
	// lets in only hosts the LAN endpoint has sent to, from any port.
	Restricted NATType = "restricted"
	// PortRestricted maps endpoint-independently and lets in only the exact
	// address and port the LAN endpoint has sent to: plain Linux masquerade.
	PortRestricted NATType = "port-restricted"
	// Symmetric gives every new destination its own random mapping
	// (endpoint-dependent), and filters like PortRestricted.
	Symmetric NATType = "symmetric"
	// UDPBlocked lets only TCP to ports 80 and 443 out (masqueraded); all UDP
	// and everything else is dropped, like a strict corporate firewall.
	UDPBlocked NATType = "udp-blocked"
)

// NATTypes lists every NATType, in the order of the package comment.
func NATTypes() []NATType {
	return []NATType{Public, FullCone, Restricted, PortRestricted, Symmetric, UDPBlocked}
}

// ParseNATType returns the NATType named s (one of the constants' values,
// e.g. "full-cone"); anything else is an error that lists the valid names.
func ParseNATType(s string) (NATType, error) {
	for _, t := range NATTypes() {
		if s == string(t) {
			return t, nil
		}
	}
	names := make([]string, 0, len(NATTypes()))
	for _, t := range NATTypes() {
		names = append(names, string(t))
	}
	return "", fmt.Errorf("netlab: unknown NAT type %q (want one of %s)", s, strings.Join(names, ", "))
}

func (t NATType) valid() bool {
	_, err := ParseNATType(string(t))
	return err == nil
}

// endpointIndependent reports whether t keeps one mapping per LAN endpoint
// whatever the destination (RFC 4787 section 4.1, "EIM").
func (t NATType) endpointIndependent() bool { return t != Symmetric }

// mappingTimeout is how long a full-cone or restricted mapping (and a
// restricted router's record of contacted addresses) outlives the last
// outbound packet. RFC 4787 REQ-5 asks for at least two minutes.
const mappingTimeout = "120s"

// tableName is the nftables table each router namespace holds.
const tableName = "parley"

// routerRules returns the nftables ruleset of a router of type t whose
// internet side is the interface wan and whose LAN side is the interface
// lan. It is loaded with `nft -f -` inside the router namespace; see the
// package comment for why each rule is there.
// Long because it is mostly the ruleset itself, one rule per NAT behaviour,
// kept in one place so it can be read against the package comment.
func routerRules(t NATType, wan, lan string) (string, error) {
	if t == Public || !t.valid() {
		return "", fmt.Errorf("netlab: no router rules for NAT type %q", t)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	cone := t == FullCone || t == Restricted
	w("table ip %s {", tableName)
	if cone {
		w("\t# LAN endpoint -> WAN endpoint: the fixed mapping that makes it endpoint-independent.")
		w("\tmap out {")
		w("\t\ttype inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service")
		w("\t\tflags dynamic,timeout")
		w("\t\ttimeout %s", mappingTimeout)
		w("\t}")
		w("\t# WAN port -> LAN endpoint: where unsolicited inbound packets go.")
		w("\tmap in {")
		w("\t\ttype inet_proto . inet_service : ipv4_addr . inet_service")
		w("\t\tflags dynamic,timeout")
		w("\t\ttimeout %s", mappingTimeout)
		w("\t}")
	}
	if t == Restricted {
		w("\t# (WAN port, remote address) pairs the mapping has sent to.")
		w("\tset seen {")
		w("\t\ttype inet_proto . inet_service . ipv4_addr")
		w("\t\tflags dynamic,timeout")
		w("\t\ttimeout %s", mappingTimeout)
		w("\t}")
	}

	w("\tchain input {")
	w("\t\ttype filter hook input priority filter; policy accept;")
	w("\t\tiifname %q ct state established,related accept", wan)
	w("\t\t# Unsolicited packets to the router itself die before conntrack confirms")
	w("\t\t# them, so they never hold a port a later outbound mapping wants.")
	w("\t\tiifname %q drop", wan)
	w("\t}")

	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy drop;")
	w("\t\tct state established,related accept")
	if t == UDPBlocked {
		w("\t\tiifname %q oifname %q tcp dport { 80, 443 } accept", lan, wan)
	} else {
		w("\t\tiifname %q oifname %q accept", lan, wan)
	}
	if cone {
		w("\t\tiifname %q oifname %q ct status dnat accept", wan, lan)
	}
	w("\t}")

	if cone {
		w("\tchain prerouting {")
		w("\t\ttype nat hook prerouting priority dstnat; policy accept;")
		if t == FullCone {
			w("\t\tiifname %q meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @in", wan)
		} else {
			w("\t\tiifname %q meta l4proto { tcp, udp } meta l4proto . th dport . ip saddr @seen dnat ip to meta l4proto . th dport map @in", wan)
		}
		w("\t}")
	}

	w("\tchain postrouting {")
	w("\t\ttype nat hook postrouting priority srcnat; policy accept;")
	switch {
	case cone:
		w("\t\toifname %q meta l4proto { tcp, udp } snat ip to meta l4proto . ip saddr . th sport map @out", wan)
		w("\t\t# A new endpoint whose port another LAN endpoint already maps gets a")
		w("\t\t# random one: one WAN port, one LAN endpoint, so inbound is unambiguous.")
		w("\t\toifname %q meta l4proto { tcp, udp } meta l4proto . th sport @in masquerade random", wan)
		w("\t\toifname %q masquerade", wan)
	case t == Symmetric:
		w("\t\toifname %q masquerade random", wan)
	default:
		w("\t\toifname %q masquerade", wan)
	}
	w("\t}")

	if cone {
		w("\t# After NAT (srcnat + 10) the headers carry the WAN endpoint and conntrack")
		w("\t# still knows the LAN one; every packet refreshes the timeouts.")
		w("\tchain track {")
		w("\t\ttype filter hook postrouting priority srcnat + 10; policy accept;")
		w("\t\toifname %q meta l4proto { tcp, udp } ct direction original update @out { meta l4proto . ct original ip saddr . ct original proto-src : ip saddr . th sport }", wan)
		w("\t\toifname %q meta l4proto { tcp, udp } ct direction reply update @out { meta l4proto . ct reply ip saddr . ct reply proto-src : ip saddr . th sport }", wan)
		w("\t\toifname %q meta l4proto { tcp, udp } ct direction original update @in { meta l4proto . th sport : ct original ip saddr . ct original proto-src }", wan)
		w("\t\toifname %q meta l4proto { tcp, udp } ct direction reply update @in { meta l4proto . th sport : ct reply ip saddr . ct reply proto-src }", wan)
		if t == Restricted {
			w("\t\toifname %q meta l4proto { tcp, udp } update @seen { meta l4proto . th sport . ip daddr }", wan)
		}
		w("\t}")
	}
	w("}")
	return b.String(), nil
}

// flushRules returns the nft commands that forget every mapping a router of
// type t keeps in nftables (conntrack is flushed separately).
func flushRules(t NATType) string {
	switch t {
	case FullCone:
		return fmt.Sprintf("flush map ip %[1]s out\nflush map ip %[1]s in\n", tableName)
	case Restricted:
		return fmt.Sprintf("flush map ip %[1]s out\nflush map ip %[1]s in\nflush set ip %[1]s seen\n", tableName)
	}
	return ""
}
