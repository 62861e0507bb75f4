package discovery

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/wire"
)

// ClaimProtocol is how a device has supernodes witness its claim of a handle.
//
// The device sends one claim frame (a ClaimRequest: the handle and its
// account's Ed25519 public key); the supernode answers with one Witness frame
// and closes. The witness says when this supernode first saw the account
// claim the handle, signed with the supernode's libp2p key, so nobody can
// claim a time earlier than the network saw. A supernode remembers the first
// time per (handle, account) and never moves it later. Frames are wire
// frames of at most MaxClaimFrame bytes; a stream lasts at most
// ClaimTimeout.
//
// Witnesses ride inside the handle record (HandleRecord.Witnesses), signed
// over by the account, at most MaxWitnesses of them. Rivals for a handle are
// ranked by the time a quorum of trusted supernodes attests (see
// HandleValidator), so one rogue supernode cannot back-date a claim.
const ClaimProtocol = "/parley/claim/1.0.0"

// Limits of the claim protocol and of witnesses.
const (
	MaxClaimFrame = 1 << 10
	ClaimTimeout  = 5 * time.Second
	MaxWitnesses  = 8
	// DefaultQuorum is how many distinct trusted supernodes must witness a
	// claim before its time counts.
	DefaultQuorum     = 2
	maxWitnessSig     = 256
	witnessSigContext = "parley claim witness v1\n"
)

// ErrBadWitness is returned for a witness that does not verify.
var ErrBadWitness = errors.New("invalid claim witness")

// ClaimRequest asks a supernode to witness a claim.
type ClaimRequest struct {
	Handle  string `json:"handle"`
	Account []byte `json:"account"`
}

// Witness is a supernode's signed statement that it first saw an account
// claim a handle at Seen. The handle and account are not repeated: they are
// those of the record carrying the witness, and the signature covers them.
type Witness struct {
	// By is the supernode's peer ID; its key signs.
	By string `json:"by"`
	// Seen is when the supernode first saw the claim, Unix milliseconds.
	Seen int64  `json:"seen"`
	Sig  []byte `json:"sig"`
}

// Check validates a claim request.
func (r *ClaimRequest) Check() error {
	if err := ValidHandle(r.Handle); err != nil {
		return err
	}
	if len(r.Account) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: account key of %d bytes", ErrBadRecord, len(r.Account))
	}
	return nil
}

func witnessBytes(handle string, account []byte, seen int64) []byte {
	b := make([]byte, 0, len(witnessSigContext)+1+len(handle)+len(account)+8)
	b = append(b, witnessSigContext...)
	b = append(b, byte(len(handle)))
	b = append(b, handle...)
	b = append(b, account...)
	return binary.BigEndian.AppendUint64(b, uint64(seen))
}

// SignWitness signs a witness of (handle, account) first seen at seen with
// the supernode's key.
func SignWitness(key crypto.PrivKey, handle string, account []byte, seen int64) (*Witness, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	sig, err := key.Sign(witnessBytes(handle, account, seen))
	if err != nil {
		return nil, err
	}
	return &Witness{By: id.String(), Seen: seen, Sig: sig}, nil
}

// Verify checks that w is a valid witness of (handle, account) and returns
// the supernode that signed it.
func (w *Witness) Verify(handle string, account []byte) (peer.ID, error) {
	if w.Seen <= 0 || len(w.Sig) == 0 || len(w.Sig) > maxWitnessSig {
		return "", fmt.Errorf("%w: malformed", ErrBadWitness)
	}
	id, err := peer.Decode(w.By)
	if err != nil {
		return "", fmt.Errorf("%w: signer: %v", ErrBadWitness, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return "", fmt.Errorf("%w: signer key: %v", ErrBadWitness, err)
	}
	if ok, err := pub.Verify(witnessBytes(handle, account, w.Seen), w.Sig); err != nil || !ok {
		return "", fmt.Errorf("%w: signature of %s does not verify", ErrBadWitness, id.ShortString())
	}
	return id, nil
}

// ParseWitness decodes a witness frame from the network and verifies it for
// (handle, account).
func ParseWitness(b []byte, handle string, account []byte) (*Witness, error) {
	if len(b) > MaxClaimFrame {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadWitness, len(b))
	}
	var w Witness
	if err := wire.DecodeJSON(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadWitness, err)
	}
	if _, err := w.Verify(handle, account); err != nil {
		return nil, err
	}
	return &w, nil
}

// RequestWitness asks supernode sn to witness the claim of handle by account.
func RequestWitness(ctx context.Context, h host.Host, sn peer.ID, handle string, account []byte) (*Witness, error) {
	ctx, cancel := context.WithTimeout(ctx, ClaimTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, sn, ClaimProtocol)
	if err != nil {
		return nil, fmt.Errorf("ask supernode %s to witness %s: %w", sn.ShortString(), handle, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(ClaimTimeout))
	if err := wire.WriteJSON(s, ClaimRequest{Handle: handle, Account: account}, MaxClaimFrame); err != nil {
		s.Reset()
		return nil, fmt.Errorf("claim %s at %s: %w", handle, sn.ShortString(), err)
	}
	b, err := wire.ReadFrame(s, MaxClaimFrame)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("witness of %s from %s: %w", handle, sn.ShortString(), err)
	}
	w, err := ParseWitness(b, handle, account)
	if err != nil {
		return nil, fmt.Errorf("witness of %s from %s: %w", handle, sn.ShortString(), err)
	}
	if w.By != sn.String() {
		return nil, fmt.Errorf("%w: %s answered with a witness of %s", ErrBadWitness, sn.ShortString(), w.By)
	}
	return w, nil
}

// MergeWitnesses adds fresh witnesses of (handle, account) to have, keeping
// per supernode the earliest valid one, at most MaxWitnesses in all (those
// of preferred supernodes first, then the earliest). It reports whether
// the result differs from have.
func MergeWitnesses(have, fresh []Witness, handle string, account []byte, preferred []peer.ID) ([]Witness, bool) {
	best := map[string]Witness{}
	for _, w := range append(append([]Witness{}, have...), fresh...) {
		if _, err := w.Verify(handle, account); err != nil {
			continue
		}
		if o, ok := best[w.By]; !ok || w.Seen < o.Seen {
			best[w.By] = w
		}
	}
	pref := map[string]bool{}
	for _, p := range preferred {
		pref[p.String()] = true
	}
	out := make([]Witness, 0, len(best))
	for _, w := range best {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		if pref[out[i].By] != pref[out[j].By] {
			return pref[out[i].By]
		}
		if out[i].Seen != out[j].Seen {
			return out[i].Seen < out[j].Seen
		}
		return out[i].By < out[j].By
	})
	if len(out) > MaxWitnesses {
		out = out[:MaxWitnesses]
	}
	changed := len(out) != len(have)
	for i := 0; !changed && i < len(out); i++ {
		changed = out[i].By != have[i].By || out[i].Seen != have[i].Seen
	}
	return out, changed
}

// ClaimRank is how a handle record's claim ranks against rival accounts'.
type ClaimRank struct {
	// Attested is set when at least a quorum of distinct trusted supernodes
	// witnessed the claim.
	Attested bool
	// At is the attested time (Unix ms): the quorum-th earliest trusted
	// witness, so a minority of rogue witnesses cannot move it earlier.
	At int64
	// Witnesses counts valid witnesses of trusted supernodes.
	Witnesses int
	// First is the earliest trusted witness, 0 if none.
	First int64
}

// Compare is negative when r ranks before o (the better claim), positive
// when after, 0 when neither.
func (r ClaimRank) Compare(o ClaimRank) int {
	switch {
	case r.Attested != o.Attested:
		if r.Attested {
			return -1
		}
		return 1
	case r.Attested:
		return cmpInt(r.At, o.At)
	case r.Witnesses != o.Witnesses:
		return cmpInt(int64(o.Witnesses), int64(r.Witnesses))
	case r.First != o.First:
		if r.First == 0 {
			return 1
		}
		if o.First == 0 {
			return -1
		}
		return cmpInt(r.First, o.First)
	}
	return 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
