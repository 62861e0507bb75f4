package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Limits of a handle lookup.
const (
	maxLookupPeers = 20 // DHT servers asked for one handle (Kademlia's k)
	lookupPeerWait = 5 * time.Second
	maxKadMessage  = 64 << 10 // a GET_VALUE answer: one record and closer peers
)

// kadProtocol is the DHT's own protocol under parley's prefix.
const kadProtocol = protocol.ID(ProtocolPrefix + "/kad/1.0.0")

// Lookup is what asking several DHT servers for a handle found.
type Lookup struct {
	// Best is the record of the best-ranked claim (see HandleValidator),
	// its highest Seq; Raw is its encoding.
	Best *HandleRecord
	Raw  []byte
	// Verified is set when Best's claim is attested by a quorum of trusted
	// supernodes (ClaimRank.Attested).
	Verified bool
	// Asked counts the servers whose answers were weighed (the closest
	// the walk found, and the trusted supernodes); Answered those that
	// answered with a valid record.
	Asked, Answered int
	// Claims are every account the servers named, the best first.
	Claims []AccountClaim
}

// AccountClaim is one account's claim of a handle as a lookup saw it.
type AccountClaim struct {
	Account     []byte
	Fingerprint string
	// Record is the highest Seq of this account's records seen; Raw its encoding.
	Record *HandleRecord
	Raw    []byte
	Rank   ClaimRank
	// Servers are the DHT servers that answered with this account.
	Servers []peer.ID
}

// Disagree reports whether the servers named more than one account.
func (l *Lookup) Disagree() bool { return len(l.Claims) > 1 }

// Of returns the claim of account, or nil when no server named it.
func (l *Lookup) Of(account []byte) *AccountClaim {
	for i := range l.Claims {
		if bytes.Equal(l.Claims[i].Account, account) {
			return &l.Claims[i]
		}
	}
	return nil
}

// ValidatorOf is the handle validator d was built with (NewDHT), or a zero
// one.
func ValidatorOf(d *dht.IpfsDHT) HandleValidator {
	if nv, ok := d.Validator.(record.NamespacedValidator); ok {
		if hv, ok := nv[HandleNamespace].(HandleValidator); ok {
			return hv
		}
	}
	return HandleValidator{}
}

// LookupHandle walks the DHT to the servers closest to a handle's key,
// asking each for the handle's record as it goes (walkValue), asks the
// trusted supernodes this host is connected to in the same walk, and
// compares the answers: it does not stop at the first. Records that do
// not validate are dropped; the rest are grouped by account and ranked by
// HandleValidator, so a rogue server's answer is one answer among several
// and loses to a claim a quorum of trusted supernodes witnessed first. It
// fails with ErrNoSuchHandle when no server has a valid record.
// Long because the quorum rule reads best in one place: ask, collect,
// verify, choose.
func LookupHandle(ctx context.Context, d *dht.IpfsDHT, handle string) (*Lookup, error) {
	if err := ValidHandle(handle); err != nil {
		return nil, err
	}
	key := HandleKey(handle)
	v := ValidatorOf(d)
	h := d.Host()

	// The trusted supernodes are asked in the walk, first, and weighed
	// whatever their distance to the key.
	var trusted []peer.ID
	for _, p := range v.Trusted {
		if p != h.ID() && h.Network().Connectedness(p) == network.Connected {
			trusted = append(trusted, p)
		}
	}
	answers, err := walkValue(ctx, d, key, trusted...)
	if len(answers) == 0 {
		if err == nil {
			err = errors.New("no DHT server answered")
		}
		return nil, fmt.Errorf("resolve handle %s: %w", handle, err)
	}

	l := &Lookup{Asked: len(answers)}
	for _, a := range answers {
		if a.raw == nil || v.Validate(key, a.raw) != nil {
			continue
		}
		l.Answered++
		r, err := ParseHandleRecord(a.raw)
		if err != nil {
			continue
		}
		c := l.Of(r.Account)
		if c == nil {
			l.Claims = append(l.Claims, AccountClaim{Account: r.Account, Fingerprint: r.Fingerprint(), Record: r, Raw: a.raw})
			c = &l.Claims[len(l.Claims)-1]
		} else if r.Seq > c.Record.Seq {
			c.Record, c.Raw = r, a.raw
		}
		c.Servers = append(c.Servers, a.p)
	}
	if len(l.Claims) == 0 {
		return nil, fmt.Errorf("%w: %s (%d servers answered)", ErrNoSuchHandle, handle, len(answers))
	}
	for i := range l.Claims {
		l.Claims[i].Rank = v.Rank(l.Claims[i].Record)
	}
	sort.SliceStable(l.Claims, func(i, j int) bool {
		if c := l.Claims[i].Rank.Compare(l.Claims[j].Rank); c != 0 {
			return c < 0
		}
		return bytes.Compare(l.Claims[i].Account, l.Claims[j].Account) < 0
	})
	best := l.Claims[0]
	l.Best, l.Raw, l.Verified = best.Record, best.Raw, best.Rank.Attested
	return l, nil
}
