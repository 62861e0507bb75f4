package mailbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/wire"
)

// Put leaves items with one holder and returns what became of each.
func Put(ctx context.Context, h host.Host, holder peer.ID, items []Item, replica bool) ([]Result, error) {
	s, err := h.NewStream(ctx, holder, Protocol)
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: %w", holder.ShortString(), err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(StreamTimeout))
	if err := wire.WriteJSON(s, Frame{Type: "put", Items: items, Replica: replica}, MaxFrame); err != nil {
		s.Reset()
		return nil, err
	}
	f, err := ReadFrame(s)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("mailbox %s: %w", holder.ShortString(), err)
	}
	if f.Type != "put-ok" || len(f.Results) != len(items) {
		s.Reset()
		return nil, fmt.Errorf("%w: bad answer to put", ErrBadFrame)
	}
	for i, r := range f.Results {
		if r.ID != items[i].ID {
			return nil, fmt.Errorf("%w: answer out of order", ErrBadFrame)
		}
	}
	return f.Results, nil
}

// Fetch takes this device's envelopes from one holder. commit is called for
// each item and must make it durable (or refuse it, returning an error); the
// holder deletes exactly the items committed. device must be h's own ID: the
// acknowledgement is signed with h's private key (see AckDomain), the only
// thing that lets any holder delete the device's mail.
func Fetch(ctx context.Context, h host.Host, holder, device peer.ID, commit func(Item) error) (int, error) {
	priv := h.Peerstore().PrivKey(h.ID())
	if device != h.ID() || priv == nil {
		return 0, fmt.Errorf("mailbox fetch for %s: only the device itself can fetch and acknowledge its mail", device.ShortString())
	}
	s, err := h.NewStream(ctx, holder, Protocol)
	if err != nil {
		return 0, fmt.Errorf("mailbox %s: %w", holder.ShortString(), err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(StreamTimeout))
	if err := wire.WriteJSON(s, Frame{Type: "fetch", Device: device.String()}, MaxFrame); err != nil {
		s.Reset()
		return 0, err
	}
	var done []string
	for {
		f, err := ReadFrame(s)
		if err != nil {
			s.Reset()
			return 0, fmt.Errorf("mailbox %s: %w", holder.ShortString(), err)
		}
		if f.Type == "end" {
			break
		}
		if f.Type != "item" || f.Item.To != device.String() {
			s.Reset()
			return 0, fmt.Errorf("%w: unexpected %s", ErrBadFrame, f.Type)
		}
		if err := commit(*f.Item); err != nil {
			// A refused envelope is acknowledged too: keeping it would only
			// hand it over again and again.
			if errors.Is(err, ErrRetryLater) {
				continue
			}
		}
		done = append(done, f.Item.ID)
	}
	n := len(done)
	for len(done) > 0 {
		batch := done[:min(len(done), MaxAckIDs)]
		done = done[len(batch):]
		ts, sig, err := SignAck(priv, time.Now(), batch)
		if err != nil {
			s.Reset()
			return 0, fmt.Errorf("sign mailbox ack: %w", err)
		}
		if err := wire.WriteJSON(s, Frame{Type: "ack", IDs: batch, TS: ts, Sig: sig}, MaxFrame); err != nil {
			return 0, err
		}
	}
	s.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(s, 1<<10)) // let the holder finish deleting
	return n, nil
}

// ErrRetryLater tells Fetch not to acknowledge an item it could not commit
// for a passing reason (a full disk, a closing store).
var ErrRetryLater = errors.New("retry later")

// Ack is a device's signed acknowledgement of envelopes (see AckDomain).
type Ack struct {
	Device string   // the recipient device's peer ID
	IDs    []string // the envelopes it committed
	TS     int64    // when it signed, Unix milliseconds
	Sig    []byte   // its Ed25519 signature over ackBytes
}

// Del passes a device's signed acknowledgement on to a holder, which checks
// it before deleting anything.
func Del(ctx context.Context, h host.Host, holder peer.ID, ack Ack) error {
	s, err := h.NewStream(ctx, holder, Protocol)
	if err != nil {
		return err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(StreamTimeout))
	return wire.WriteJSON(s, Frame{Type: "del", Device: ack.Device, IDs: ack.IDs, TS: ack.TS, Sig: ack.Sig}, MaxFrame)
}
