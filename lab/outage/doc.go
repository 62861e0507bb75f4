// Package outage is the researchers' outage lab (issue 11): the same
// users and workload on three topologies — p2p (parley as designed),
// supernode (every call relayed by a supernode) and cloud (every server in
// one cloud region, every call relayed there) — while a scripted fault
// replays one of the outages of DESIGN.md ("The outages parley exists
// for"), and a report of what the users got.
//
// Everything runs for real: netlab builds network namespaces with kernel
// NATs, and natlab's process helpers start `parley supernode`, `parley
// relay` and one `parley daemon` per device in them. The lab drives the
// daemons through their control API (the unix socket in each home): it
// places calls with the speech-like signal and records what each caller
// hears, sends chat messages, and reads every recipient's history at the
// end, whose received_ms is the commit time a message's latency is
// measured to (milliseconds: every process shares this machine's clock).
//
// # Layout
//
// Servers take public hosts (203.0.113.10 onwards): Options.Sites sites
// of Options.SupernodesPerSite supernodes (sn-a1, sn-b1, …; each with
// STUN and TURN for the supernode relay tier, and the mailbox), then the
// cloud relay (`parley relay`) in the "cloud" region. In the cloud
// topology every supernode is in the cloud region too. Each device sits
// behind a NAT router of its own, of a type drawn by the seed; a share of
// them runs the mobile profile. Daemons bootstrap from every supernode
// and know the cloud relay; their --path is auto, supernode or cloud by
// topology.
//
// # Workload and scenarios
//
// NewWorkload draws devices, offline windows, calls and messages from
// the seed (Poisson arrivals): the same seed gives the same workload and,
// with the same options, the same outage times. A Scenario is data: a
// target (the cloud region, the first supernode's site, or a share of
// supernodes), an action (reboot, destroy, crash, boot-loop) and its
// durations. Scenarios lists the built-in ones.
//
// # Limits
//
// There is no latency, loss or bandwidth shaping (netlab has none);
// servers' and devices' CPU is this machine's two cores, shared. A
// device takes one call at a time. Daemons need a reachable supernode to
// start, so devices start before the outage (an offline device coming
// back during one may fail to, which the report shows). outage must
// never run parley code in its own process inside a namespace.
package outage
