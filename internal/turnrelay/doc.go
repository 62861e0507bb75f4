// Package turnrelay is parley's TURN server (RFC 8656, on pion/turn) for the
// two relay tiers: the operator-run cloud relay (`parley relay`, see
// StartCloud) and the optional TURN service of a supernode (New). It also
// serves the libp2p protocol through which authenticated peers obtain
// credentials for it (CredentialService; the protocol and its client are
// package turncreds).
//
// What the relay must never do:
//   - relay for anyone without a valid TURN REST credential
//     (internal/turnrest: "<expiry>:<id>" and base64 HMAC-SHA1, shared with
//     coturn's use-auth-secret); expired, future-dated beyond
//     MaxCredentialTTL, malformed, other-realm and wrong-HMAC credentials
//     are refused, and an Allocate without MESSAGE-INTEGRITY only gets the
//     401 challenge;
//   - send to loopback, unspecified, private (RFC 1918, ULA), link-local
//     (incl. 169.254.169.254), CGNAT, multicast, documentation or other
//     special-purpose addresses, in any spelling (::ffff:127.0.0.1 is
//     127.0.0.1), unless the operator allowed the prefix (see PeerPolicy);
//     CreatePermission and ChannelBind toward them are refused (403 and
//     401 from pion), so a Send indication toward them has no permission
//     and is dropped, and the relayed socket re-checks every datagram;
//   - send to any port of its own addresses (every interface address of
//     the host, the relay and bind IPs), even where the operator allowed
//     the prefix: not to its listeners, its libp2p ports or any co-located
//     service. The one exception is another allocation's relayed port on
//     this server (two clients of one relay reaching each other); tests
//     that run every peer on the relay's own 127.0.0.1 opt in with
//     AllowOwnAddrs, and even then the listeners stay refused;
//   - relay over TCP (RFC 6062 is refused);
//   - exceed its quotas: allocations in total, per credential id and per
//     client IP (Allocate gets 486), TCP/TLS connections likewise, and per
//     allocation a byte and a packet rate in each direction (excess
//     datagrams are dropped); an allocation lives at most
//     MaxAllocationDuration, and at most one lifetime past its credential's
//     expiry, since a Refresh needs a valid credential;
//   - log a secret or a password.
//
// The relayed address is always RelayIPs (one per family) and a port in
// MinPort-MaxPort.
package turnrelay
