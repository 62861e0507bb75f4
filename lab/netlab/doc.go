// Package netlab builds the network of parley's NAT lab (DESIGN.md,
// testing ladder step 3): Linux network namespaces joined by veth pairs
// and bridges, with real kernel NATs made of nftables rules, so that real
// parley nodes run behind full-cone, address-restricted, port-restricted,
// symmetric and UDP-blocking routers.
//
// netlab must never touch the machine's own network. Everything it makes
// lives in namespaces named with the lab's prefix; nothing is created in
// the default namespace; the internet namespace has no link out; every
// address comes from the documentation ranges of RFC 5737 (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24). It needs root and the ip and nft
// commands; Available says what is missing, and tests skip with that.
//
// # Topology
//
// P is the lab's prefix (Options.Prefix, by default "pl" and six random
// hex digits); N numbers veth pairs.
//
//	                          P-inet: the internet
//	+-------------------------- bridge Pbr -------------------------------+
//	| 203.0.113.1/24, 198.51.100.1/24: gateways with forwarding off, so a  |
//	| packet to an address nobody holds dies here, as on the real internet |
//	+-----+---------------+------------------+-------------------+--------+
//	      | PbN           |                  |                   |
//	      | PeN           |                  |                   |
//	+-----+-------+ +-----+-------+ +--------+-----------+ +-----+------------+
//	| P-h-sn      | | P-h-relay   | | P-r-alice: router  | | P-h-carol        |
//	| 203.0.113.10| | 203.0.113.11| | WAN 198.51.100.10  | | 198.51.100.11    |
//	+-------------+ +-------------+ | nftables, forwards | | (NAT type public)|
//	 AddPublicHost                  | LAN bridge Plan    | +------------------+
//	                                | 192.0.2.1/29       |  AddNATHost(public)
//	                                +---+------------+---+
//	                                    |            |
//	                          +---------+---+ +------+----------+
//	                          | P-h-alice   | | P-h-alice-phone |
//	                          | 192.0.2.2   | | 192.0.2.3       |
//	                          +-------------+ +-----------------+
//	                           AddNATHost      AddHostBehind
//
// Public hosts (AddPublicHost: supernodes, the cloud relay) take
// 203.0.113.10 onwards. Router WANs and NAT-type-public clients take
// 198.51.100.10 onwards. Each router's LAN is the next /29 of 192.0.2.0/24
// (32 LANs): the router holds the first address, up to five hosts the
// next ones. Hosts on the bridge route the other /24 on-link and default
// to their gateway; LAN hosts default to their router. IPv6 is disabled
// in every namespace, and IPv4 forwarding is on in routers only.
//
// Namespaces are P-inet, P-h-<host> and P-r-<first host behind it>;
// interfaces are Pbr, Plan, PeN (a host's or router's end of veth pair N)
// and PbN (the end on a bridge), all within Linux's 15 bytes. The bridge
// Pbr carries an alias naming the owning process, so New and SweepStale
// can tell a crashed run's leftovers from a live lab.
//
// # NAT types
//
// Mapping and filtering are in RFC 4787's terms (sections 4.1 and 5).
// Each router namespace holds one table, loaded with `nft -f -` before its
// links exist. Every NAT type but public starts from:
//
//	chain input {
//		type filter hook input priority filter; policy accept;
//		iifname WAN ct state established,related accept
//		iifname WAN drop
//	}
//	chain forward {
//		type filter hook forward priority filter; policy drop;
//		ct state established,related accept
//		iifname LAN oifname WAN accept
//	}
//
// The input drop models a home router, which answers nothing unsolicited.
// It also matters for punching: a packet that arrives before the client
// has opened its mapping creates a conntrack entry, which conntrack
// confirms only after the input hook. Dropping it there throws the entry
// away. Had the entry been kept, it would hold the reply tuple the
// client's later outbound packet needs, and the NAT would give that
// packet a new port, so punching would fail for a reason no real router
// has. Forwarding needs conntrack state, or a LAN source, or (for cones)
// a DNAT made by the rules below.
//
// port-restricted (EIM, address-and-port-dependent filtering):
//
//	chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//		oifname WAN masquerade }
//
// Linux masquerade keeps a LAN endpoint's port. Through its by-source
// table it reuses the endpoint's existing mapping for every new
// destination. Inbound packets pass only when they match a conntrack
// entry, which means the exact address and port the client sent to.
// Masquerade can give two LAN hosts the same WAN port for different
// destinations; conntrack filtering makes that harmless here.
//
// symmetric (endpoint-dependent mapping, address-and-port-dependent
// filtering):
//
//	oifname WAN masquerade random
//
// Every new conntrack entry, so every new destination address and port,
// gets a random port.
//
// udp-blocked (a strict corporate firewall): the forward rule becomes
//
//	iifname LAN oifname WAN tcp dport { 80, 443 } accept
//
// with `oifname WAN masquerade`. Nothing else leaves, not even ICMP, and
// dropped packets get no answer, so a TCP connect to another port hangs.
//
// full-cone (EIM, endpoint-independent filtering) needs two dynamic maps
// that outlive conntrack entries. A postrouting chain after NAT (priority
// srcnat + 10) fills them: there the packet carries its WAN endpoint and
// conntrack still knows the LAN one. Every packet refreshes the 120 s
// timeout (RFC 4787 REQ-5), and the reply direction of inbound-made flows
// counts too.
//
//	map out { type inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service
//		flags dynamic,timeout; timeout 120s }   # LAN endpoint -> WAN endpoint
//	map in  { type inet_proto . inet_service : ipv4_addr . inet_service
//		flags dynamic,timeout; timeout 120s }   # WAN port -> LAN endpoint
//	chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//		iifname WAN meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @in }
//	chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//		oifname WAN meta l4proto { tcp, udp } snat ip to meta l4proto . ip saddr . th sport map @out
//		oifname WAN meta l4proto { tcp, udp } meta l4proto . th sport @in masquerade random
//		oifname WAN masquerade }
//	chain track { type filter hook postrouting priority srcnat + 10; policy accept;
//		oifname WAN meta l4proto { tcp, udp } ct direction original update @out { meta l4proto . ct original ip saddr . ct original proto-src : ip saddr . th sport }
//		oifname WAN meta l4proto { tcp, udp } ct direction reply update @out { meta l4proto . ct reply ip saddr . ct reply proto-src : ip saddr . th sport }
//		oifname WAN meta l4proto { tcp, udp } ct direction original update @in { meta l4proto . th sport : ct original ip saddr . ct original proto-src }
//		oifname WAN meta l4proto { tcp, udp } ct direction reply update @in { meta l4proto . th sport : ct reply ip saddr . ct reply proto-src }
//	}
//	forward: iifname WAN oifname LAN ct status dnat accept
//
// A new inbound flow to a mapped port is sent, by DNAT, to its LAN
// endpoint, whoever sends it. A known LAN endpoint always gets its
// recorded mapping (snat from @out), even after its conntrack entries
// expire. A new endpoint keeps its port unless another LAN endpoint
// already holds that WAN port (it is a key of @in); then it gets a
// random one, so one WAN port always leads to one LAN endpoint. A missed
// map lookup makes a rule not match, and evaluation falls through to the
// next rule.
//
// restricted (address-restricted cone: EIM, address-dependent filtering)
// is full-cone plus a set of the remote addresses each mapping has sent
// to. DNAT happens only for a remote that is in the set:
//
//	set seen { type inet_proto . inet_service . ipv4_addr; flags dynamic,timeout; timeout 120s }
//	prerouting: iifname WAN meta l4proto { tcp, udp } meta l4proto . th dport . ip saddr @seen dnat ip to meta l4proto . th dport map @in
//	track:      oifname WAN meta l4proto { tcp, udp } update @seen { meta l4proto . th sport . ip daddr }
//
// routerRules generates these rules; the lab's tests check each type's
// mapping and filtering with real packets.
//
// # Use
//
//	lab, err := netlab.New(ctx, netlab.Options{Logger: log})
//	defer lab.Close()
//	sn, err := lab.AddPublicHost(ctx, "sn1")
//	alice, err := lab.AddNATHost(ctx, "alice", netlab.Symmetric)
//	cmd := alice.Command(ctx, "parley", "daemon", ...)  // a process inside
//	err = alice.Do(func() error { conn, err = net.ListenUDP(...) })  // a socket inside
//	err = lab.FlushNAT(ctx, alice)        // fault: the router forgets its mappings
//	err = lab.SetLinkUp(ctx, alice, false) // fault: alice goes offline
//
// The caller must call Close, also on failure and on Ctrl-C. After a
// killed run, New with the same Prefix removes the leftovers, and
// SweepStale("pl") removes every crashed run's leftovers while sparing
// live labs. Sweep removes labs whatever state they are in.
//
// # Limits
//
// IPv4 only. Up to 32 NAT routers, five hosts per LAN, and 245 hosts on
// each public range. There is no hairpinning: a LAN host cannot reach its
// own router's public address. There is no delay, loss or bandwidth
// shaping, because the kernel lacks netem. Mappings last 120 s after
// their last packet. Conntrack's own timeouts (UDP: 30 s before a reply,
// 120 s after) still decide port-restricted and symmetric filtering.
package netlab
