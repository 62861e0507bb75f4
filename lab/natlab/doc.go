// Package natlab runs real parley processes in a lab of real kernel NATs
// (lab/netlab) and measures what each pair of NAT types gets: whether a
// call connects, over which tier (direct, supernode relay, cloud relay),
// how fast, and whether the audio heard is the audio sent. It is the
// researchers' answer to "which NATs punch, and what does the fallback
// cost" (DESIGN.md, testing ladder step 3), and it can kill a relay in
// the middle of a call to measure the outage.
//
// # Topology
//
// One lab per run, built by netlab in namespaces of its own:
//
//	sn     203.0.113.10  parley supernode: libp2p TCP 443 and QUIC 4100,
//	                     STUN 3478, TURN UDP 3479 and TCP 80
//	cloud  203.0.113.11  parley relay: TURN UDP 3479 and TCP 80, libp2p
//	                     TCP 443 and QUIC 4100
//	<type>-a, <type>-b   for every NAT type, two client hosts, each behind
//	                     a router of its own: -a places calls, -b answers
//
// The servers' TCP listeners sit on 443 and 80 because udp-blocked
// clients reach nothing else. Both TURN servers may relay to the three
// RFC 5737 ranges of the lab, and only to them.
//
// Every client runs `parley daemon --auto-answer --speech --out
// HOME/heard.wav` with the supernode as bootstrap and the cloud relay as
// --cloud-relay. A call is `parley --home HOME call HANDLE --speech
// --duration D --json` run from the default namespace (the control socket
// is a file); natlab reads the JSON line it ends with, then the callee's
// recording, and correlates it (media.Correlation) with the speech-like
// signal `--speech` sends (media.SpeechLikeSource(1)), half a second at a
// time, since an adaptive jitter buffer may shift playout by a frame
// mid-call (Pair.AudioCorrelation). Recordings, every process's stdout and
// stderr and each call's output stay in Options.Dir when one is given.
//
// # Faults
//
// Lab.Fault runs calls at once (FaultCalls), SIGKILLs a process 3 s
// after the last became active and reports, per call, the tier before
// and after, the longest silence the callee recorded next to the longest
// pause in the signal itself, and whether the call did what it was there
// to show (FaultCall.Held):
//   - "cloud" or "supernode": the server dies under calls relayed through
//     it by a policy that allows the other relay tier (public → public,
//     and the NATed symmetric → symmetric and public → port-restricted,
//     whose signalling rides the supernode's circuit), which must move
//     with at most 3 s of silence, and beside them a direct call, which
//     must not notice;
//   - "caller": the caller's daemon dies under a direct call; natlab asks
//     the callee's control API until the call has ended (at most 30 s),
//     then restarts the caller's daemon with the same home and calls
//     again, which must connect with audio.
//
// A callee that never ends a call never closes its recording; natlab
// then judges what it had written. A device takes one call at a time, so
// a fault that needs more hosts of a type than -a and -b adds spares
// (<type>-c…), each behind a NAT of its own.
//
// # Limits and cleanup
//
// It needs root and the ip and nft commands (netlab.Available). Every
// wait is bounded. Close, which RunMatrix always calls, stops the
// processes and deletes the namespaces; children also die with this
// process (PR_SET_PDEATHSIG), and Start sweeps crashed runs' namespaces
// (netlab.SweepStale). natlab never runs parley code in its own process
// inside a namespace: libp2p and pion open sockets on goroutines of their
// own, which would escape it.
//
// shared.go exports the process, address and recording helpers that other
// harnesses (lab/outage) build on.
package natlab
