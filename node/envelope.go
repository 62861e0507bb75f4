package node

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/nacl/box"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

// An Envelope carries one payload from one device to one device, end to end.
//
// The payload (a message, a receipt or a group's creation) is sealed with
// NaCl box (X25519, XSalsa20-Poly1305) from the sender device's box key to
// the recipient device's box key, both published in the accounts' signed
// handle records. The sending device signs the whole envelope with its
// Ed25519 libp2p key, and the envelope carries the sender account's signed
// handle record, so a recipient can check — even for an envelope a mailbox
// kept for weeks — that the signing device belonged to the account. A relay
// or a mailbox sees who sends to which device, and when, but never the
// payload.
//
// Limits: an encoded envelope is at most MaxEnvelope bytes.
type Envelope struct {
	V          int    `json:"v"`
	ID         string `json:"id"`          // unique per payload; a message's ID
	From       string `json:"from"`        // sender handle
	FromDevice string `json:"from_device"` // sender peer ID
	ToDevice   string `json:"to_device"`   // recipient peer ID
	Nonce      []byte `json:"nonce"`       // 24 bytes
	Box        []byte `json:"box"`         // sealed payload
	Record     []byte `json:"record"`      // sender account's signed handle record
	Sig        []byte `json:"sig"`         // sender device's Ed25519 signature
}

// Limits of envelopes and payloads.
const (
	MaxEnvelope    = 96 << 10
	maxPayload     = 48 << 10
	maxGroupSize   = 32
	maxReceiptIDs  = 512
	envelopeSigCtx = "parley envelope v1\n"
)

// ErrBadEnvelope is returned for an envelope that must not be accepted.
var ErrBadEnvelope = errors.New("bad envelope")

// Payload kinds.
const (
	kindMessage = "msg"
	kindReceipt = "receipt"
)

// Payload is what an envelope seals.
type Payload struct {
	Kind string `json:"kind"`
	// msg
	ID      string `json:"id,omitempty"`
	Conv    string `json:"conv,omitempty"`
	Lamport uint64 `json:"lamport,omitempty"`
	SentMS  int64  `json:"sent_ms,omitempty"`
	Body    string `json:"body,omitempty"`
	Group   *Group `json:"group,omitempty"` // group messages carry the group
	// receipt
	Receipt *Receipt `json:"receipt,omitempty"`
}

// Receipt tells a sender that messages reached (or were read on) a device.
type Receipt struct {
	State string   `json:"state"` // "delivered" or "read"
	IDs   []string `json:"ids"`
}

// Group is a small group conversation.
type Group struct {
	ID      string   `json:"id"` // hex, also the conversation "grp:<id>"
	Name    string   `json:"name"`
	Members []string `json:"members"` // handles, creator included, sorted
}

func (e *Envelope) signedBytes() ([]byte, error) {
	c := *e
	c.Sig = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return append([]byte(envelopeSigCtx), b...), nil
}

// sealEnvelope seals p for one device of a recipient.
func sealEnvelope(id *Identity, p *Payload, envID string, to discovery.Device) ([]byte, error) {
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if len(plain) > maxPayload {
		return nil, fmt.Errorf("%w: payload of %d bytes (limit %d)", ErrBadMessage, len(plain), maxPayload)
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	var peerKey, myKey [32]byte
	copy(peerKey[:], to.BoxKey)
	copy(myKey[:], id.BoxKey.Bytes())
	e := &Envelope{V: 1, ID: envID, From: id.Handle(), FromDevice: id.PeerID.String(), ToDevice: to.PeerID,
		Nonce: nonce[:], Box: box.Seal(nil, plain, &nonce, &peerKey, &myKey), Record: id.Record()}
	msg, err := e.signedBytes()
	if err != nil {
		return nil, err
	}
	if e.Sig, err = id.DeviceKey.Sign(msg); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxEnvelope {
		return nil, fmt.Errorf("%w: envelope of %d bytes (limit %d)", ErrBadMessage, len(b), MaxEnvelope)
	}
	return b, nil
}

// parseEnvelope decodes an envelope and checks everything that needs no
// key of ours: bounds, the sender's record, that it lists the signing
// device, and the signature. It returns the envelope and the sender's record.
func parseEnvelope(b []byte) (*Envelope, *discovery.HandleRecord, error) {
	if len(b) > MaxEnvelope {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrBadEnvelope, len(b))
	}
	var e Envelope
	if err := wire.DecodeJSON(b, &e); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	if e.V != 1 || !validID(e.ID) || len(e.Nonce) != 24 || len(e.Box) < box.Overhead || len(e.Box) > maxPayload+box.Overhead {
		return nil, nil, fmt.Errorf("%w: malformed header", ErrBadEnvelope)
	}
	from, err := peer.Decode(e.FromDevice)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: sender device: %v", ErrBadEnvelope, err)
	}
	if _, err := peer.Decode(e.ToDevice); err != nil {
		return nil, nil, fmt.Errorf("%w: recipient device: %v", ErrBadEnvelope, err)
	}
	rec, err := discovery.ParseHandleRecord(e.Record)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: sender record: %v", ErrBadEnvelope, err)
	}
	if rec.Handle != e.From {
		return nil, nil, fmt.Errorf("%w: from %s with the record of %s", ErrBadEnvelope, e.From, rec.Handle)
	}
	if !rec.HasDevice(from) {
		return nil, nil, fmt.Errorf("%w: device %s is not in %s's record", ErrBadEnvelope, from.ShortString(), e.From)
	}
	pub, err := from.ExtractPublicKey()
	if err != nil || pub.Type() != crypto.Ed25519 {
		return nil, nil, fmt.Errorf("%w: sender device key: %v", ErrBadEnvelope, err)
	}
	msg, err := e.signedBytes()
	if err != nil {
		return nil, nil, err
	}
	if ok, err := pub.Verify(msg, e.Sig); err != nil || !ok {
		return nil, nil, fmt.Errorf("%w: signature does not verify", ErrBadEnvelope)
	}
	return &e, rec, nil
}

// openEnvelope opens the payload of a parsed envelope addressed to us.
func openEnvelope(e *Envelope, rec *discovery.HandleRecord, myBox *ecdh.PrivateKey) (*Payload, error) {
	dev := rec.Device(mustDecode(e.FromDevice))
	if dev == nil {
		return nil, fmt.Errorf("%w: unknown sender device", ErrBadEnvelope)
	}
	var nonce [24]byte
	var peerKey, myKey [32]byte
	copy(nonce[:], e.Nonce)
	copy(peerKey[:], dev.BoxKey)
	copy(myKey[:], myBox.Bytes())
	plain, ok := box.Open(nil, e.Box, &nonce, &peerKey, &myKey)
	if !ok {
		return nil, fmt.Errorf("%w: cannot open: not sealed for this device", ErrBadEnvelope)
	}
	return decodePayload(plain)
}

func decodePayload(b []byte) (*Payload, error) {
	var p Payload
	if err := wire.DecodeJSON(b, &p); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadEnvelope, err)
	}
	switch p.Kind {
	case kindMessage:
		if p.Receipt != nil {
			return nil, fmt.Errorf("%w: message with a receipt", ErrBadEnvelope)
		}
		m := wireMsg{ID: p.ID, Conv: p.Conv, From: "x0", Lamport: p.Lamport, SentMS: p.SentMS, Body: p.Body}
		if err := m.checkFields(); err != nil {
			return nil, err
		}
		if err := checkConv(p.Conv, p.Group); err != nil {
			return nil, err
		}
	case kindReceipt:
		r := p.Receipt
		if r == nil || (r.State != "delivered" && r.State != "read") || len(r.IDs) == 0 || len(r.IDs) > maxReceiptIDs || p.Body != "" || p.Group != nil {
			return nil, fmt.Errorf("%w: bad receipt", ErrBadEnvelope)
		}
		for _, id := range r.IDs {
			if !validID(id) {
				return nil, fmt.Errorf("%w: bad receipt id", ErrBadEnvelope)
			}
		}
	default:
		return nil, fmt.Errorf("%w: unknown payload kind %q", ErrBadEnvelope, p.Kind)
	}
	return &p, nil
}

// checkConv checks a conversation name, and for a group that the group
// described matches it.
func checkConv(conv string, g *Group) error {
	if gid, ok := groupConvID(conv); ok {
		if g == nil || g.ID != gid {
			return fmt.Errorf("%w: group message without its group", ErrBadFrame)
		}
		return g.check()
	}
	if g != nil {
		return fmt.Errorf("%w: group on a direct conversation", ErrBadFrame)
	}
	_, err := convMembers(conv)
	return err
}

func (g *Group) check() error {
	if !validID(g.ID) || len(g.ID) != 32 {
		return fmt.Errorf("%w: bad group id", ErrBadFrame)
	}
	if len(g.Name) == 0 || len(g.Name) > 64 || !utf8.ValidString(g.Name) {
		return fmt.Errorf("%w: group name must be 1-64 bytes", ErrBadFrame)
	}
	if len(g.Members) < 2 || len(g.Members) > maxGroupSize {
		return fmt.Errorf("%w: a group has 2 to %d members", ErrBadFrame, maxGroupSize)
	}
	for i, m := range g.Members {
		if discovery.ValidHandle(m) != nil || (i > 0 && g.Members[i-1] >= m) {
			return fmt.Errorf("%w: group members must be sorted distinct handles", ErrBadFrame)
		}
	}
	return nil
}

func (g *Group) has(handle string) bool {
	for _, m := range g.Members {
		if m == handle {
			return true
		}
	}
	return false
}
