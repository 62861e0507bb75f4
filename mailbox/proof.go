package mailbox

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// An acknowledgement proof is the recipient device's signature over the IDs
// it committed. Only such a proof deletes or tombstones mail: a holder checks
// it before deleting and passes it on unchanged when it tells the other
// holders, which check it again against the public key inside the device's
// peer ID. Whoever carries a proof, even a stranger replaying it, can only
// remove what the device itself said it has.
//
// The signed bytes are
//
//	AckDomain NUL device NUL ts_ms NUL id1 NUL id2 ...
//
// with ts_ms in decimal. The domain string keeps the signature from meaning
// anything in another protocol, and another protocol's signature from
// meaning anything here.
const (
	// AckDomain separates acknowledgement signatures from every other
	// signature a device key makes.
	AckDomain = "parley/mailbox/ack/v1"
	// MaxAckIDs bounds the IDs one proof covers.
	MaxAckIDs = 1024
	// ackSigLen is an Ed25519 signature's length: the only key type a proof
	// may be made with, since only it is carried inside the peer ID.
	ackSigLen = 64
	// ackFuture is how far a proof's time may lie ahead of the holder's
	// clock.
	ackFuture = 10 * time.Minute
)

// ErrBadProof is returned for an acknowledgement without a valid signature
// of the recipient device.
var ErrBadProof = errors.New("mailbox: no valid acknowledgement from the recipient device")

// ackBytes are the bytes a device signs to acknowledge ids.
func ackBytes(device string, tsMS int64, ids []string) []byte {
	var b strings.Builder
	b.WriteString(AckDomain)
	b.WriteByte(0)
	b.WriteString(device)
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(tsMS, 10))
	for _, id := range ids {
		b.WriteByte(0)
		b.WriteString(id)
	}
	return []byte(b.String())
}

// SignAck signs the acknowledgement of ids by the device whose key is priv.
func SignAck(priv crypto.PrivKey, now time.Time, ids []string) (tsMS int64, sig []byte, err error) {
	dev, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return 0, nil, err
	}
	tsMS = now.UnixMilli()
	sig, err = priv.Sign(ackBytes(dev.String(), tsMS, ids))
	return tsMS, sig, err
}

// VerifyAck checks that device signed the acknowledgement of ids at tsMS,
// and that tsMS is neither older than maxAge nor ahead of now by more than
// ackFuture. The key comes from the peer ID itself: nothing the carrier
// says about keys is trusted.
func VerifyAck(device string, tsMS int64, ids []string, sig []byte, now time.Time, maxAge time.Duration) error {
	if len(ids) == 0 || len(ids) > MaxAckIDs || len(sig) != ackSigLen {
		return fmt.Errorf("%w: %d ids, %d-byte signature", ErrBadProof, len(ids), len(sig))
	}
	t := time.UnixMilli(tsMS)
	if t.After(now.Add(ackFuture)) || t.Before(now.Add(-maxAge)) {
		return fmt.Errorf("%w: signed at %s, out of range", ErrBadProof, t.UTC().Format(time.RFC3339))
	}
	id, err := peer.Decode(device)
	if err != nil {
		return fmt.Errorf("%w: device %q: %v", ErrBadProof, device, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil || pub.Type() != crypto.Ed25519 {
		return fmt.Errorf("%w: device %s has no Ed25519 key in its ID", ErrBadProof, id.ShortString())
	}
	ok, err := pub.Verify(ackBytes(device, tsMS, ids), sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: bad signature by %s", ErrBadProof, id.ShortString())
	}
	return nil
}
