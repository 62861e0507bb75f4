// Package mailbox keeps end-to-end encrypted envelopes for devices that are
// offline, on the k supernodes closest to the recipient's account in the DHT
// keyspace, and hands them over when the device comes back.
//
// A mailbox stores opaque envelopes: it sees which device an envelope is
// for, which device sent it, its size and its ID, never its payload. It must
// never store anything it has not been able to commit to disk, and never give
// a device's envelopes to anyone but that device.
//
// # Protocol /parley/mailbox/1.0.0
//
// One request per stream, in wire frames of at most MaxFrame bytes:
//
//	put   {items}          -> put-ok {results}: each item stored (synced to
//	                          disk) or refused with a reason
//	fetch {device}         -> item frames, then end; the dialing peer must be
//	                          that device. The client then sends
//	                          ack {ids, ts_ms, sig} for what it committed,
//	                          signed by the device (see AckDomain), and the
//	                          mailbox deletes those and remembers them (a
//	                          tombstone) until they would have expired, so
//	                          replication cannot bring them back.
//	del   {device, ids, ts_ms, sig}
//	                       -> (between holders) the device's signed
//	                          acknowledgement, passed on unchanged; the
//	                          receiving holder checks the signature against
//	                          the key in the device's peer ID. Nothing else
//	                          deletes mail: being a supernode, or in anyone's
//	                          routing table, gives no right to.
//
// Limits: an envelope is at most MaxEnvelope bytes and lives at most
// DefaultTTL; a recipient device holds at most MaxPerRecipient envelopes and a
// sender device may leave at most MaxPerSender across all recipients. Bytes
// are capped per source IP, per source prefix (/24 for IPv4, /48 for IPv6),
// per (recipient, source prefix) and in total (see Config), so identities,
// which are free, buy an attacker nothing: it fills only its own prefix's
// share of a recipient's mailbox and of the disk. An ack or del carries at
// most MaxAckIDs IDs and a 64-byte Ed25519 signature.
package mailbox

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/wire"
)

// Protocol is the mailbox protocol ID.
const Protocol = "/parley/mailbox/1.0.0"

// Limits and defaults.
const (
	MaxEnvelope     = 96 << 10
	MaxFrame        = MaxEnvelope*4/3 + 1024
	MaxItemsPerPut  = 16
	MaxPerRecipient = 10000
	MaxPerSender    = 5000
	DefaultK        = 3
	// DefaultTTL is the longest a holder keeps an envelope.
	DefaultTTL = 30 * 24 * time.Hour
	// StreamTimeout bounds one request, on either side.
	StreamTimeout = 30 * time.Second
	// MaxReason bounds the reason a put-ok result gives for a refusal.
	MaxReason = 200
)

// ErrBadFrame is returned for a frame that breaks the protocol.
var ErrBadFrame = errors.New("malformed mailbox frame")

// Item is one envelope for one device.
type Item struct {
	ID        string `json:"id"`         // the envelope's ID
	To        string `json:"to"`         // recipient device peer ID
	Account   []byte `json:"account"`    // recipient account key: where the item lives in the keyspace
	From      string `json:"from"`       // sender device peer ID
	ExpiresMS int64  `json:"expires_ms"` // when the mailbox may drop it
	Env       []byte `json:"env"`        // the encoded envelope, opaque here
	// Src is the IP address the first holder took the item from, so that
	// replicas are charged to the original sender's quotas. Only a replica
	// put from a supernode sets it; it is never handed to the recipient.
	Src string `json:"src,omitempty"`
}

// Result says what became of one put item.
type Result struct {
	ID  string `json:"id"`
	Err string `json:"err,omitempty"`
}

// Frame is any mailbox frame.
type Frame struct {
	Type    string   `json:"t"`
	Items   []Item   `json:"items,omitempty"`   // put
	Item    *Item    `json:"item,omitempty"`    // item
	Results []Result `json:"results,omitempty"` // put-ok
	Device  string   `json:"device,omitempty"`  // fetch, del
	IDs     []string `json:"ids,omitempty"`     // ack, del
	Replica bool     `json:"replica,omitempty"` // put: a copy from another holder
	TS      int64    `json:"ts_ms,omitempty"`   // ack, del: when the device signed
	Sig     []byte   `json:"sig,omitempty"`     // ack, del: the device's signature
}

// Key is the DHT key whose closest supernodes keep an account's mail.
func Key(account []byte) string { return "/parley-mailbox/" + string(account) }

// DecodeFrame parses and checks one frame.
func DecodeFrame(b []byte) (*Frame, error) {
	var f Frame
	if err := wire.DecodeJSON(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	bad := func(what string) (*Frame, error) { return nil, fmt.Errorf("%w: %s", ErrBadFrame, what) }
	switch f.Type {
	case "put":
		if len(f.Items) == 0 || len(f.Items) > MaxItemsPerPut {
			return bad("put of 1 to 16 items")
		}
		for i := range f.Items {
			if err := f.Items[i].check(); err != nil {
				return nil, err
			}
		}
	case "item":
		if f.Item == nil {
			return bad("item frame without item")
		}
		if err := f.Item.check(); err != nil {
			return nil, err
		}
	case "put-ok":
		if len(f.Results) == 0 || len(f.Results) > MaxItemsPerPut {
			return bad("put-ok of 1 to 16 results")
		}
		for _, r := range f.Results {
			if !validID(r.ID) || len(r.Err) > MaxReason {
				return bad("bad result")
			}
		}
	case "fetch":
		if _, err := peer.Decode(f.Device); err != nil {
			return bad("fetch for a bad device")
		}
	case "ack", "del":
		if len(f.IDs) == 0 || len(f.IDs) > MaxAckIDs {
			return bad(f.Type + " of 1 to 1024 ids")
		}
		if len(f.Sig) != ackSigLen || f.TS <= 0 {
			return bad(f.Type + " without a device signature")
		}
		for _, id := range f.IDs {
			if !validID(id) {
				return bad("bad id")
			}
		}
		if f.Type == "del" {
			if _, err := peer.Decode(f.Device); err != nil {
				return bad("del for a bad device")
			}
		}
	case "end":
	default:
		return bad(fmt.Sprintf("unknown type %q", f.Type))
	}
	return &f, nil
}

func (it *Item) check() error {
	switch {
	case !validID(it.ID):
		return fmt.Errorf("%w: bad item id", ErrBadFrame)
	case len(it.Account) != 32:
		return fmt.Errorf("%w: bad account key", ErrBadFrame)
	case len(it.Env) == 0 || len(it.Env) > MaxEnvelope:
		return fmt.Errorf("%w: envelope of %d bytes (limit %d)", ErrBadFrame, len(it.Env), MaxEnvelope)
	case it.ExpiresMS <= 0:
		return fmt.Errorf("%w: no expiry", ErrBadFrame)
	case len(it.Src) > 64:
		return fmt.Errorf("%w: bad source address", ErrBadFrame)
	}
	if _, err := peer.Decode(it.To); err != nil {
		return fmt.Errorf("%w: bad recipient", ErrBadFrame)
	}
	if _, err := peer.Decode(it.From); err != nil {
		return fmt.Errorf("%w: bad sender", ErrBadFrame)
	}
	return nil
}

func validID(s string) bool { return wire.ValidID(s) }

// ReadFrame reads and decodes one frame of at most MaxFrame bytes.
func ReadFrame(r io.Reader) (*Frame, error) {
	b, err := wire.ReadFrame(r, MaxFrame)
	if err != nil {
		return nil, err
	}
	return DecodeFrame(b)
}
