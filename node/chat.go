package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

const (
	helloTimeout    = 10 * time.Second
	chatIdleTimeout = 60 * time.Second
	outboxBatch     = 256
)

// handleChat serves one inbound chat stream.
func (n *Node) handleChat(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !n.inbound.acquire(remote) {
		n.log.Warn("chat stream refused: too many open", "peer", remote)
		s.Reset()
		return
	}
	defer n.inbound.release(remote)
	if err := n.serveChat(s, remote); err != nil {
		n.log.Warn("chat stream reset", "peer", remote, "err", err)
		s.Reset()
		return
	}
	s.Close()
}

func (n *Node) serveChat(s network.Stream, remote peer.ID) error {
	s.SetReadDeadline(n.cfg.Now().Add(helloTimeout))
	b, err := wire.ReadFrame(s, MaxChatFrame)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	f, err := decodeChatFrame(b)
	if err != nil {
		return err
	}
	if f.Type != "hello" {
		return fmt.Errorf("%w: expected hello, got %s", ErrBadFrame, f.Type)
	}
	sender, err := n.checkHello(f.Record, remote)
	if err != nil {
		return err
	}
	for {
		s.SetReadDeadline(n.cfg.Now().Add(chatIdleTimeout))
		b, err := wire.ReadFrame(s, MaxChatFrame)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		f, err := decodeChatFrame(b)
		if err != nil {
			return err
		}
		if f.Type != "msg" {
			return fmt.Errorf("%w: expected msg, got %s", ErrBadFrame, f.Type)
		}
		ack := chatFrame{Type: "ack", ID: f.Msg.ID}
		if err := n.receive(f.Msg, sender, remote); err != nil {
			ack.Err = err.Error()
			n.log.Warn("message refused", "peer", remote, "id", f.Msg.ID, "err", err)
		}
		if err := wire.WriteJSON(s, ack, MaxChatFrame); err != nil {
			return fmt.Errorf("write ack: %w", err)
		}
	}
}

// checkHello verifies that the record is valid now, that it lists the
// authenticated remote peer as a device, and that its account is the one we
// pinned for the handle.
func (n *Node) checkHello(record []byte, remote peer.ID) (*discovery.HandleRecord, error) {
	rec, err := discovery.ParseHandleRecord(record)
	if err != nil {
		return nil, err
	}
	now := n.cfg.Now()
	if err := rec.CheckFresh(now); err != nil {
		return nil, err
	}
	if !rec.HasDevice(remote) {
		return nil, fmt.Errorf("peer %s is not a device of %s", remote.ShortString(), rec.Handle)
	}
	if rec.Handle == n.id.Handle() {
		if !n.id.AccountPub.Equal(ed25519.PublicKey(rec.Account)) {
			return nil, fmt.Errorf("%w for my own handle %s", ErrContactKeyChanged, rec.Handle)
		}
		if rec.Seq > n.id.state.Seq {
			n.id.AdoptRecord(record)
		}
		return rec, nil
	}
	if err := n.store.CheckContact(n.ctx, rec.Handle, rec.Account, now.UnixMilli()); err != nil {
		return nil, err
	}
	return rec, nil
}

// receive commits one message and announces it if it is new.
func (n *Node) receive(m *wireMsg, sender *discovery.HandleRecord, remote peer.ID) error {
	if m.From != sender.Handle {
		return fmt.Errorf("message claims to be from %s on a stream of %s", m.From, sender.Handle)
	}
	members, err := convMembers(m.Conv)
	if err != nil {
		return err
	}
	me := n.id.Handle()
	if !(members[0] == me || members[1] == me) || !(members[0] == m.From || members[1] == m.From) {
		return fmt.Errorf("conversation %s is not between %s and me", m.Conv, m.From)
	}
	msg := Message{ID: m.ID, Conv: m.Conv, From: m.From, FromDevice: remote.String(), Lamport: m.Lamport,
		SentMS: m.SentMS, ReceivedMS: n.cfg.Now().UnixMilli(), Body: m.Body}
	fresh, err := n.store.AddIncoming(n.ctx, msg)
	if err != nil {
		return err
	}
	if fresh {
		n.events.publish(Event{Type: "message", Peer: convPeer(m.Conv, me), Message: &msg})
	}
	return nil
}

// SendResult says where a sent message is.
type SendResult struct {
	Message   Message       `json:"message"`
	Delivered []string      `json:"delivered"` // device peer IDs that acknowledged
	Queued    []QueuedEntry `json:"queued"`    // devices the outbox keeps trying
}

// QueuedEntry is a device a message has not reached yet.
type QueuedEntry struct {
	Handle string `json:"handle"`
	Device string `json:"device"`
	Error  string `json:"error"`
}

// ErrBadMessage is returned for a message body that cannot be sent.
var ErrBadMessage = errors.New("message cannot be sent")

// Send writes a message to the outbox, durably, and makes one delivery
// attempt to every device of the recipient and every other device of mine.
// Devices not reached stay in the outbox, retried until they acknowledge.
func (n *Node) Send(ctx context.Context, to, body string) (*SendResult, error) {
	if len(body) == 0 || len(body) > MaxBodyBytes || !utf8.ValidString(body) {
		return nil, fmt.Errorf("%w: body must be 1 to %d bytes of UTF-8", ErrBadMessage, MaxBodyBytes)
	}
	rec, err := n.resolve(ctx, to, false)
	if err != nil {
		return nil, err
	}
	mine, err := discovery.ParseHandleRecord(n.id.Record())
	if err != nil {
		return nil, err
	}
	var targets []Target
	for _, d := range rec.Devices {
		if d.PeerID != n.ID().String() {
			targets = append(targets, Target{Handle: rec.Handle, Device: d.PeerID})
		}
	}
	if rec.Handle != mine.Handle {
		for _, d := range mine.Devices {
			if d.PeerID != n.ID().String() {
				targets = append(targets, Target{Handle: mine.Handle, Device: d.PeerID})
			}
		}
	}
	now := n.cfg.Now()
	conv := DMConv(n.id.Handle(), rec.Handle)
	lamport, err := n.store.NextLamport(ctx, conv)
	if err != nil {
		return nil, err
	}
	m := Message{ID: newMessageID(now), Conv: conv, From: n.id.Handle(), FromDevice: n.ID().String(),
		Lamport: lamport, SentMS: now.UnixMilli(), Body: body, Outgoing: true}
	if err := n.store.AddOutgoing(ctx, m, targets); err != nil {
		return nil, err
	}
	res := &SendResult{Message: m, Delivered: []string{}, Queued: []QueuedEntry{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		go func(t Target) {
			defer wg.Done()
			err := n.deliverPending(ctx, t.Device, []Pending{{Target: t, Msg: m}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Queued = append(res.Queued, QueuedEntry{Handle: t.Handle, Device: t.Device, Error: err.Error()})
			} else {
				res.Delivered = append(res.Delivered, t.Device)
			}
		}(t)
	}
	wg.Wait()
	if len(res.Queued) > 0 {
		n.kickOutbox()
	}
	return res, nil
}

// History returns the conversation with a handle, oldest first.
func (n *Node) History(ctx context.Context, with string, limit int) ([]Message, error) {
	if err := discovery.ValidHandle(with); err != nil {
		return nil, err
	}
	return n.store.History(ctx, DMConv(n.id.Handle(), with), limit)
}

func (n *Node) kickOutbox() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// outboxLoop retries every delivery not yet acknowledged, with exponential
// backoff per delivery, until the node stops.
func (n *Node) outboxLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		pending, err := n.store.PendingDeliveries(n.ctx, n.cfg.Now().UnixMilli(), outboxBatch)
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("read outbox", "err", err)
			}
			continue
		}
		byDevice := map[string][]Pending{}
		var order []string
		for _, p := range pending {
			if _, ok := byDevice[p.Device]; !ok {
				order = append(order, p.Device)
			}
			byDevice[p.Device] = append(byDevice[p.Device], p)
		}
		for _, dev := range order {
			if _, busy := n.inflight.LoadOrStore(dev, struct{}{}); busy {
				continue
			}
			n.wg.Add(1)
			go func(dev string, ps []Pending) {
				defer n.wg.Done()
				defer n.inflight.Delete(dev)
				if err := n.deliverPending(n.ctx, dev, ps); err != nil {
					n.log.Debug("outbox delivery failed", "device", dev, "n", len(ps), "err", err)
				}
			}(dev, byDevice[dev])
		}
	}
}

// deliverPending sends messages to one device over one stream and records
// each acknowledgement; whatever is not acknowledged is rescheduled.
func (n *Node) deliverPending(ctx context.Context, device string, ps []Pending) (err error) {
	acked := map[string]bool{}
	defer func() {
		now := n.cfg.Now()
		for _, p := range ps {
			if acked[p.Msg.ID] {
				continue
			}
			why := "not acknowledged"
			if err != nil {
				why = err.Error()
			}
			backoff := time.Duration(1<<min(p.Attempts, 6)) * time.Second
			n.store.MarkFailed(context.Background(), p.Msg.ID, device, now.Add(min(backoff, maxRetryBackoff)).UnixMilli(), why)
		}
	}()
	id, err := peer.Decode(device)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DeliveryTimeout)
	defer cancel()
	if err := n.connect(ctx, id); err != nil {
		return err
	}
	s, err := n.host.NewStream(ctx, id, ChatProtocol)
	if err != nil {
		return fmt.Errorf("open chat stream to %s: %w", id.ShortString(), err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if err := wire.WriteJSON(s, chatFrame{Type: "hello", Record: n.id.Record()}, MaxChatFrame); err != nil {
		s.Reset()
		return err
	}
	// Pipeline: a writer sends every message while this goroutine reads acks.
	werr := make(chan error, 1)
	go func() {
		for _, p := range ps {
			m := wireMsg{ID: p.Msg.ID, Conv: p.Msg.Conv, From: p.Msg.From, Lamport: p.Msg.Lamport, SentMS: p.Msg.SentMS, Body: p.Msg.Body}
			if err := wire.WriteJSON(s, chatFrame{Type: "msg", Msg: &m}, MaxChatFrame); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	var refused error
	for range ps {
		b, err := wire.ReadFrame(s, MaxChatFrame)
		if err != nil {
			s.Reset()
			<-werr
			return fmt.Errorf("read ack from %s: %w", id.ShortString(), err)
		}
		f, err := decodeChatFrame(b)
		if err != nil || f.Type != "ack" {
			s.Reset()
			<-werr
			return fmt.Errorf("bad ack from %s: %v", id.ShortString(), err)
		}
		if f.Err != "" {
			refused = fmt.Errorf("%s refused message %s: %s", id.ShortString(), f.ID, f.Err)
			continue
		}
		if err := n.store.MarkDelivered(context.Background(), f.ID, device, n.cfg.Now().UnixMilli()); err != nil {
			return err
		}
		acked[f.ID] = true
	}
	if err := <-werr; err != nil {
		return err
	}
	return refused
}

// circuitAddr is the address of target through relay's circuit relay v2.
func circuitAddr(relay, target peer.ID) ([]ma.Multiaddr, error) {
	a, err := ma.NewMultiaddr("/p2p/" + relay.String() + "/p2p-circuit")
	if err != nil {
		return nil, err
	}
	return []ma.Multiaddr{a}, nil
}
