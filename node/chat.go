package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/mailbox"
)

const (
	chatIdleTimeout = 60 * time.Second
	outboxBatch     = 256
	deliverBatch    = 64 // envelopes per stream or mailbox round
)

// handleChat serves one inbound chat stream: envelopes in, acks out.
func (n *Node) handleChat(s network.Stream) {
	remote := s.Conn().RemotePeer()
	ip := remoteIP(s.Conn())
	if !n.inbound.acquireFrom(remote, ip) {
		n.badInput.Warn("chat stream refused: too many open", "peer", remote, "ip", ip)
		s.Reset()
		return
	}
	defer n.inbound.releaseFrom(remote, ip)
	if err := n.serveChat(s, remote); err != nil {
		n.badInput.Warn("chat stream reset", "peer", remote, "err", err)
		s.Reset()
		return
	}
	s.Close()
}

func (n *Node) serveChat(s network.Stream, remote peer.ID) error {
	// A stream may wait chatIdleTimeout for its next frame, but a frame
	// that has begun must arrive whole within ChatFrameTimeout: a half-sent
	// frame holds a slot for seconds, not a minute. Deadlines are only
	// moved when a read may block (nothing buffered, or a frame only partly
	// buffered), so a burst of frames costs no timer per frame.
	br := bufio.NewReaderSize(s, 16<<10)
	for {
		if br.Buffered() == 0 {
			s.SetReadDeadline(n.cfg.Now().Add(chatIdleTimeout))
		}
		first, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read envelope: %w", err)
		}
		if !frameBuffered(first, br) {
			s.SetReadDeadline(n.cfg.Now().Add(n.cfg.ChatFrameTimeout))
		}
		b, err := wire.ReadFrame(io.MultiReader(bytes.NewReader([]byte{first}), br), MaxChatFrame)
		if err != nil {
			return fmt.Errorf("read envelope: %w", err)
		}
		f, err := decodeChatFrame(b)
		if err != nil {
			return err
		}
		if f.Type != "env" {
			return fmt.Errorf("%w: expected env, got %s", ErrBadFrame, f.Type)
		}
		id, err := n.receiveEnvelope(f.Env, remote, false)
		ack := chatFrame{Type: "ack", ID: id}
		if err != nil {
			if id == "" {
				return err // not even an envelope we can name
			}
			ack.Err, ack.Held = err.Error(), errors.Is(err, ErrHeld)
			n.badInput.Warn("envelope refused", "peer", remote, "id", id, "held", ack.Held, "err", err)
		}
		if err := wire.WriteJSON(s, ack, MaxChatFrame); err != nil {
			return fmt.Errorf("write ack: %w", err)
		}
	}
}

// ErrHeld is returned for an envelope or invite whose sender cannot be
// verified now: its record's account is not the one pinned here or named by
// a verified DHT lookup. It is not accepted and not shown; it is not refused
// for good either, so an honest sender (or a mailbox) keeps it and tries
// again, and nobody is locked out by a forger.
var ErrHeld = errors.New("held: sender not verified")

// verifyTimeout bounds the DHT lookup that verifies a first-time sender.
const verifyTimeout = 10 * time.Second

// frameBuffered reports whether the rest of the frame whose first byte was
// first is already in br, so reading it cannot block.
func frameBuffered(first byte, br *bufio.Reader) bool {
	if br.Buffered() < 3 {
		return false
	}
	rest, _ := br.Peek(3)
	n := int(first)<<24 | int(rest[0])<<16 | int(rest[1])<<8 | int(rest[2])
	return br.Buffered() >= 3+n
}

// checkHello verifies a signed handle record presented by an authenticated
// peer: valid now, listing that peer as a device, and of the account that is
// the handle's by the rules of verifySender.
func (n *Node) checkHello(record []byte, remote peer.ID) (*discovery.HandleRecord, error) {
	rec, err := discovery.ParseHandleRecord(record)
	if err != nil {
		return nil, err
	}
	if err := rec.CheckFresh(n.cfg.Now()); err != nil {
		return nil, err
	}
	if !rec.HasDevice(remote) {
		return nil, fmt.Errorf("peer %s is not a device of %s", remote.ShortString(), rec.Handle)
	}
	ctx, cancel := context.WithTimeout(n.ctx, verifyTimeout)
	defer cancel()
	if err := n.verifySender(ctx, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// verifySender checks that rec, a record a sending device presented (it is
// signed by its account and lists the device), is of the account that owns
// the handle: the account pinned here from an earlier verified lookup, or
// else the one a verified DHT lookup names now (which it then pins). The
// presented record itself is never trusted for the binding of handle to
// account; once the account checks out it may carry a newer device list.
// It fails with ErrHeld when the account is not (or not yet) the handle's,
// and with ErrContactKeyChanged when it claims this device's own handle.
func (n *Node) verifySender(ctx context.Context, rec *discovery.HandleRecord) error {
	if rec.Handle == n.id.Handle() {
		if !n.id.AccountPub.Equal(ed25519.PublicKey(rec.Account)) {
			return fmt.Errorf("%w for my own handle %s", ErrContactKeyChanged, rec.Handle)
		}
		return nil
	}
	pinned, err := n.store.Contact(ctx, rec.Handle)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrHeld, err)
	}
	if pinned == nil {
		if n.lookupFailedRecently(rec.Handle) {
			return fmt.Errorf("%w: %s could not be looked up a moment ago", ErrHeld, rec.Handle)
		}
		cur, err := n.resolve(ctx, rec.Handle, false)
		if err != nil {
			if !errors.Is(err, ErrOffline) {
				// Offline, no lookup was made: the next envelope may try.
				n.noteLookupFailed(rec.Handle)
			}
			return fmt.Errorf("%w: look %s up: %v", ErrHeld, rec.Handle, err)
		}
		pinned = cur.Account
	}
	if !bytes.Equal(pinned, rec.Account) {
		return fmt.Errorf("%w: %s's record is signed by account %s, but %s is the account of %s here",
			ErrHeld, rec.Handle, rec.Fingerprint(), discovery.Fingerprint(pinned), rec.Handle)
	}
	n.noteRecord(rec)
	return nil
}

// Limits of the memory of failed verifying lookups: a sender whose handle
// could not be looked up is held without another lookup for
// failedLookupFor, so a flood of envelopes in an unknown handle's name costs
// one DHT lookup per handle and interval, and at most maxFailedLookups
// handles are remembered.
const (
	failedLookupFor  = 10 * time.Second
	maxFailedLookups = 1024
)

func (n *Node) lookupFailedRecently(handle string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.failed[handle]
	return ok && n.cfg.Now().Sub(t) < failedLookupFor
}

func (n *Node) noteLookupFailed(handle string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failed == nil || len(n.failed) >= maxFailedLookups {
		n.failed = map[string]time.Time{}
	}
	n.failed[handle] = n.cfg.Now()
}

// receiveEnvelope checks, opens and commits one envelope. relayedBy is the
// peer that handed it over (the sender device itself, or a mailbox). It
// returns the envelope's ID when it could be parsed.
func (n *Node) receiveEnvelope(b []byte, handedBy peer.ID, viaMailbox bool) (string, error) {
	e, rec, err := parseEnvelope(b)
	if err != nil {
		return "", err
	}
	if e.ToDevice != n.ID().String() {
		return e.ID, fmt.Errorf("%w: addressed to another device", ErrBadEnvelope)
	}
	if !viaMailbox && e.FromDevice != handedBy.String() {
		return e.ID, fmt.Errorf("%w: envelope of %s handed over by %s", ErrBadEnvelope, e.FromDevice, handedBy.ShortString())
	}
	now := n.cfg.Now()
	mine := e.From == n.id.Handle()
	vctx, cancel := context.WithTimeout(n.ctx, verifyTimeout)
	err = n.verifySender(vctx, rec)
	cancel()
	if err != nil {
		return e.ID, err
	}
	if mine {
		n.id.AdoptRecord(e.Record) // a newer device list of my own account
	}
	// The record in the envelope proves the device was the account's when it
	// signed; a device since unlinked must not speak for the account now.
	cur := n.cachedRecord
	if mine {
		cur = func(string) *discovery.HandleRecord {
			r, _ := discovery.ParseHandleRecord(n.id.Record())
			return r
		}
	}
	if cur := cur(e.From); cur != nil && cur.Seq > rec.Seq && !cur.HasDevice(mustDecode(e.FromDevice)) {
		return e.ID, fmt.Errorf("%w: device %s was unlinked from %s", ErrBadEnvelope, shortPeer(e.FromDevice), e.From)
	}
	p, err := openEnvelope(e, rec, n.id.BoxKey)
	if err != nil {
		return e.ID, err
	}
	switch p.Kind {
	case kindReceipt:
		return e.ID, n.store.ApplyReceipt(n.ctx, e.FromDevice, p.Receipt.State, p.Receipt.IDs, now.UnixMilli())
	case kindMessage:
		if p.ID != e.ID {
			return e.ID, fmt.Errorf("%w: message id differs from envelope id", ErrBadEnvelope)
		}
		return e.ID, n.receiveMessage(e, p, mine, viaMailbox)
	}
	return e.ID, nil
}

func (n *Node) receiveMessage(e *Envelope, p *Payload, mine, viaMailbox bool) error {
	me := n.id.Handle()
	now := n.cfg.Now()
	peerName := ""
	if p.Group != nil {
		if !p.Group.has(me) || !p.Group.has(e.From) {
			return fmt.Errorf("group %s does not have both %s and me", p.Group.Name, e.From)
		}
		// The first description of a group this device saw stands; the
		// sender must be a member of that one.
		g, err := n.store.SaveGroup(n.ctx, p.Group, now.UnixMilli())
		if err != nil {
			return err
		}
		if !g.has(e.From) || !g.has(me) {
			return fmt.Errorf("%s is not a member of #%s", e.From, g.Name)
		}
		peerName = "#" + g.Name
	} else {
		members, err := convMembers(p.Conv)
		if err != nil {
			return err
		}
		if !(members[0] == me || members[1] == me) || !(members[0] == e.From || members[1] == e.From) {
			return fmt.Errorf("conversation %s is not between %s and me", p.Conv, e.From)
		}
		peerName = convPeer(p.Conv, me)
	}
	msg := Message{ID: p.ID, Conv: p.Conv, From: e.From, FromDevice: e.FromDevice, Lamport: p.Lamport,
		SentMS: p.SentMS, ReceivedMS: now.UnixMilli(), Body: p.Body}
	fresh, err := n.store.AddIncoming(n.ctx, msg)
	if err != nil {
		return err
	}
	if fresh {
		n.events.publish(Event{Type: "message", Peer: peerName, Message: &msg})
	}
	// A message that came through a mailbox gets a receipt, so its sender
	// learns it arrived; a direct one was acknowledged on the stream.
	if viaMailbox && !mine {
		n.queueReceipt(e.From, e.FromDevice, "delivered", []string{p.ID})
	}
	return nil
}

func (n *Node) queueReceipt(handle, device, state string, ids []string) {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), maxReceiptIDs)]
		ids = ids[len(batch):]
		b, _ := json.Marshal(&Payload{Kind: kindReceipt, Receipt: &Receipt{State: state, IDs: batch}})
		if err := n.store.Enqueue(n.ctx, newMessageID(n.cfg.Now()), kindReceipt, b, Target{Handle: handle, Device: device}); err != nil {
			n.log.Warn("queue receipt", "err", err)
		}
	}
	n.kickOutbox()
}

// SendResult says where a sent message is.
type SendResult struct {
	Message   Message       `json:"message"`
	Delivered []string      `json:"delivered"` // device peer IDs that acknowledged
	Mailbox   []string      `json:"mailbox"`   // devices whose mailboxes hold it
	Queued    []QueuedEntry `json:"queued"`    // devices the outbox keeps trying
	Refused   []QueuedEntry `json:"refused"`   // devices that refused it for good
}

// QueuedEntry is a device a message has not reached yet.
type QueuedEntry struct {
	Handle string `json:"handle"`
	Device string `json:"device"`
	Error  string `json:"error"`
}

// ErrBadMessage is returned for a message that cannot be sent.
var ErrBadMessage = errors.New("message cannot be sent")

// errTooLong is the error for a message body of n bytes, over the limit.
func errTooLong(n int) error {
	return fmt.Errorf("%w: %d bytes, and a message is at most %d bytes (16 KiB)", ErrBadMessage, n, MaxBodyBytes)
}

// ErrNoSuchGroup is returned for a group name this device does not know.
var ErrNoSuchGroup = errors.New("no such group")

// Send writes a message to the outbox, durably, and makes one delivery
// attempt to every device it is for: the recipient's (or every member's, for
// "#group") and my other devices. Devices not reached get it through their
// mailboxes or later retries; Send never loses a message it returned for.
func (n *Node) Send(ctx context.Context, to, body string) (*SendResult, error) {
	switch {
	case len(body) > MaxBodyBytes:
		return nil, errTooLong(len(body))
	case len(body) == 0 || !utf8.ValidString(body):
		return nil, fmt.Errorf("%w: body must be 1 to %d bytes of UTF-8", ErrBadMessage, MaxBodyBytes)
	}
	var conv string
	var group *Group
	var handles []string
	if name, ok := strings.CutPrefix(to, "#"); ok {
		g, err := n.groupByName(ctx, name)
		if err != nil {
			return nil, err
		}
		group, conv, handles = g, GroupConv(g.ID), g.Members
	} else {
		rec, err := n.resolve(ctx, to, false)
		if err != nil {
			return nil, err
		}
		conv, handles = DMConv(n.id.Handle(), rec.Handle), []string{rec.Handle}
	}
	targets, err := n.targets(ctx, handles)
	if err != nil {
		return nil, err
	}
	now := n.cfg.Now()
	lamport, err := n.store.NextLamport(ctx, conv)
	if err != nil {
		return nil, err
	}
	m := Message{ID: newMessageID(now), Conv: conv, From: n.id.Handle(), FromDevice: n.ID().String(),
		Lamport: lamport, SentMS: now.UnixMilli(), Body: body, Outgoing: true}
	payload, err := json.Marshal(&Payload{Kind: kindMessage, ID: m.ID, Conv: conv, Lamport: lamport, SentMS: m.SentMS, Body: body, Group: group})
	if err != nil {
		return nil, err
	}
	if err := n.store.AddOutgoing(ctx, m, payload, targets); err != nil {
		return nil, err
	}
	res := &SendResult{Message: m, Delivered: []string{}, Mailbox: []string{}, Queued: []QueuedEntry{}, Refused: []QueuedEntry{}}
	// The message is durable now. Each device gets one delivery attempt,
	// owned by the node (it outlives this request); Send reports what the
	// attempts achieved within sendWait, and a device still being tried
	// (one that just went offline costs a dial timeout) as queued.
	type outcome struct {
		t     Target
		state int
		err   error
	}
	done := make(chan outcome, len(targets))
	for _, t := range targets {
		n.wg.Add(1)
		go func(t Target) {
			defer n.wg.Done()
			state, err := n.deliver(n.ctx, t.Device, []Outgoing{{ID: m.ID, Device: t.Device, Handle: t.Handle, Kind: kindMessage, Payload: payload}})
			done <- outcome{t, state[m.ID], err}
		}(t)
	}
	wait := time.NewTimer(sendWait)
	defer wait.Stop()
	pending := map[string]Target{}
	for _, t := range targets {
		pending[t.Device] = t
	}
	for len(pending) > 0 {
		var o outcome
		select {
		case o = <-done:
		case <-wait.C:
		case <-ctx.Done():
		}
		if o.t.Device == "" {
			break
		}
		delete(pending, o.t.Device)
		e := QueuedEntry{Handle: o.t.Handle, Device: o.t.Device}
		if o.err != nil {
			e.Error = o.err.Error()
		}
		switch o.state {
		case outDelivered:
			res.Delivered = append(res.Delivered, o.t.Device)
		case outMailbox:
			res.Mailbox = append(res.Mailbox, o.t.Device)
		case outRefused:
			res.Refused = append(res.Refused, e)
		default:
			res.Queued = append(res.Queued, e)
		}
	}
	if len(res.Queued) > 0 {
		n.kickOutbox() // an attempt that failed; those in progress go on
	}
	for _, t := range targets {
		if _, ok := pending[t.Device]; ok {
			res.Queued = append(res.Queued, QueuedEntry{Handle: t.Handle, Device: t.Device, Error: "delivery still in progress"})
		}
	}
	return res, nil
}

// sendWait is how long Send waits for its delivery attempts before it
// returns with what they achieved so far; the attempts go on.
const sendWait = 1 * time.Second

// targets lists every device of the handles, and my own other devices.
func (n *Node) targets(ctx context.Context, handles []string) ([]Target, error) {
	seen := map[string]bool{n.ID().String(): true}
	var out []Target
	add := func(rec *discovery.HandleRecord) {
		for _, d := range rec.Devices {
			if !seen[d.PeerID] {
				seen[d.PeerID] = true
				out = append(out, Target{Handle: rec.Handle, Device: d.PeerID})
			}
		}
	}
	mine, err := discovery.ParseHandleRecord(n.id.Record())
	if err != nil {
		return nil, err
	}
	add(mine)
	for _, h := range handles {
		if h == n.id.Handle() {
			continue
		}
		rec, err := n.resolve(ctx, h, false)
		if err != nil {
			return nil, err
		}
		add(rec)
	}
	return out, nil
}

// History returns the conversation with a handle or "#group", oldest first,
// and marks what it returns as read (read receipts go to the senders).
func (n *Node) History(ctx context.Context, with string, limit int) ([]Message, error) {
	conv, err := n.convOf(ctx, with)
	if err != nil {
		return nil, err
	}
	h, err := n.store.History(ctx, conv, limit)
	if err != nil {
		return nil, err
	}
	n.MarkRead(ctx, conv)
	return h, nil
}

// MarkRead marks a conversation's incoming messages read and tells their
// senders.
func (n *Node) MarkRead(ctx context.Context, conv string) {
	unread, err := n.store.MarkRead(ctx, conv, n.cfg.Now().UnixMilli())
	if err != nil {
		n.log.Warn("mark read", "err", err)
		return
	}
	for t, ids := range unread {
		if t.Handle != n.id.Handle() {
			n.queueReceipt(t.Handle, t.Device, "read", ids)
		}
	}
}

func (n *Node) convOf(ctx context.Context, with string) (string, error) {
	if name, ok := strings.CutPrefix(with, "#"); ok {
		g, err := n.groupByName(ctx, name)
		if err != nil {
			return "", err
		}
		return GroupConv(g.ID), nil
	}
	if err := discovery.ValidHandle(with); err != nil {
		return "", err
	}
	return DMConv(n.id.Handle(), with), nil
}

// CreateGroup makes a group of me and the given handles (up to 32 in all)
// and tells every member with a first message.
func (n *Node) CreateGroup(ctx context.Context, name string, members []string) (*Group, error) {
	if _, err := n.groupByName(ctx, name); err == nil {
		return nil, fmt.Errorf("%w: a group named #%s exists", ErrBadMessage, name)
	}
	set := map[string]bool{n.id.Handle(): true}
	for _, m := range members {
		if err := discovery.ValidHandle(m); err != nil {
			return nil, err
		}
		set[m] = true
	}
	g := &Group{ID: hex.EncodeToString(randBytes(16)), Name: name}
	for m := range set {
		g.Members = append(g.Members, m)
	}
	sort.Strings(g.Members)
	if err := g.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	for _, m := range g.Members {
		if m != n.id.Handle() {
			if _, err := n.resolve(ctx, m, false); err != nil {
				return nil, err
			}
		}
	}
	if _, err := n.store.SaveGroup(ctx, g, n.cfg.Now().UnixMilli()); err != nil {
		return nil, err
	}
	_, err := n.Send(ctx, "#"+name, fmt.Sprintf("%s created #%s with %s", n.id.Handle(), name, strings.Join(g.Members, ", ")))
	return g, err
}

// Groups lists the groups this device is in.
func (n *Node) Groups(ctx context.Context) ([]Group, error) { return n.store.Groups(ctx) }

func (n *Node) groupByName(ctx context.Context, name string) (*Group, error) {
	gs, err := n.store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	var found []Group
	for _, g := range gs {
		if g.Name == name {
			found = append(found, g)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: #%s", ErrNoSuchGroup, name)
	case 1:
		return &found[0], nil
	}
	return nil, fmt.Errorf("%w: %d groups are named #%s", ErrNoSuchGroup, len(found), name)
}

func (n *Node) kickOutbox() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// outboxLoop retries every envelope not yet acknowledged by its device or a
// mailbox, with exponential backoff per envelope, and fetches this device's
// mailbox now and then, until the node stops.
func (n *Node) outboxLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RetryInterval)
	defer t.Stop()
	lastFetch := time.Time{}
	for {
		if now := n.cfg.Now(); now.Sub(lastFetch) >= n.cfg.FetchInterval {
			lastFetch = now
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.FetchMailbox(n.ctx)
			}()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		pending, err := n.store.PendingOut(n.ctx, n.cfg.Now().UnixMilli(), outboxBatch)
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("read outbox", "err", err)
			}
			continue
		}
		byDevice := map[string][]Outgoing{}
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
			go func(dev string, ps []Outgoing) {
				defer n.wg.Done()
				defer n.inflight.Delete(dev)
				if _, err := n.deliver(n.ctx, dev, ps); err != nil {
					n.log.Debug("outbox delivery", "device", dev, "n", len(ps), "err", err)
				}
			}(dev, byDevice[dev])
		}
	}
}

// deliver hands envelopes to their device directly, or else to the device's
// mailboxes, and records where each one got to. What neither took is
// rescheduled with backoff.
func (n *Node) deliver(ctx context.Context, device string, outs []Outgoing) (map[string]int, error) {
	state := map[string]int{}
	id, err := peer.Decode(device)
	if err != nil {
		return state, err
	}
	envs, rec, err := n.seal(ctx, id, outs)
	if err == nil && n.recentlyUnreachable(id) {
		// Do not wait for a dial timeout per message: the device was just
		// unreachable, so its mail goes to its mailboxes.
		err = unreachableError{fmt.Errorf("device %s unreachable a moment ago", id.ShortString())}
	} else if err == nil {
		for len(envs) > 0 {
			b := min(len(envs), deliverBatch)
			if err = n.deliverDirect(ctx, id, outs[:b], envs[:b], state); err != nil {
				break
			}
			outs, envs = outs[b:], envs[b:]
		}
	}
	if err != nil && isUnreachable(err) && envs != nil {
		// The device is not reachable: leave what it lacks with its mailboxes.
		n.markUnreachable(id)
		var left []Outgoing
		var leftEnvs [][]byte
		for i, o := range outs {
			if _, ok := state[o.ID]; !ok {
				left, leftEnvs = append(left, o), append(leftEnvs, envs[i])
			}
		}
		if merr := n.deposit(ctx, id, rec, left, leftEnvs, state); merr != nil {
			err = fmt.Errorf("%v; mailbox: %w", err, merr)
		}
	}
	now := n.cfg.Now()
	for _, o := range outs {
		if _, ok := state[o.ID]; ok {
			continue
		}
		why := "not acknowledged"
		if err != nil {
			why = err.Error()
		}
		backoff := min(time.Duration(1<<min(o.Attempts, 6))*time.Second, maxRetryBackoff)
		n.store.MarkRetry(context.Background(), o.ID, device, now.Add(backoff).UnixMilli(), why)
	}
	return state, err
}

// unreachableFor is how long a device that could not be dialled is not
// dialled again for new messages (a connection from it ends this early).
const unreachableFor = 30 * time.Second

func (n *Node) markUnreachable(id peer.ID) {
	n.unreachable.Store(id, n.cfg.Now().Add(unreachableFor))
}

func (n *Node) recentlyUnreachable(id peer.ID) bool {
	v, ok := n.unreachable.Load(id)
	if !ok {
		return false
	}
	if n.cfg.Now().After(v.(time.Time)) {
		n.unreachable.Delete(id)
		return false
	}
	return true
}

type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

func isUnreachable(err error) bool {
	var u unreachableError
	return errors.As(err, &u)
}

// seal builds each envelope for the device, from the recipient's record.
func (n *Node) seal(ctx context.Context, device peer.ID, outs []Outgoing) ([][]byte, *discovery.HandleRecord, error) {
	if len(outs) == 0 {
		return nil, nil, nil
	}
	rec, err := n.resolve(ctx, outs[0].Handle, false)
	if err != nil {
		return nil, nil, err
	}
	dev := rec.Device(device)
	if dev == nil {
		// Unlinked since: nothing more goes to it.
		for _, o := range outs {
			n.store.MarkOut(context.Background(), o.ID, device.String(), outRefused, n.cfg.Now().UnixMilli(), "device unlinked")
		}
		return nil, nil, fmt.Errorf("device %s is no longer one of %s's", device.ShortString(), rec.Handle)
	}
	envs := make([][]byte, 0, len(outs))
	for _, o := range outs {
		p, err := decodePayload(o.Payload)
		if err != nil {
			return nil, nil, err
		}
		b, err := sealEnvelope(n.id, p, o.ID, *dev)
		if err != nil {
			return nil, nil, err
		}
		envs = append(envs, b)
	}
	return envs, rec, nil
}

// deliverDirect sends envelopes over one chat stream, pipelined.
func (n *Node) deliverDirect(ctx context.Context, id peer.ID, outs []Outgoing, envs [][]byte, state map[string]int) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DeliveryTimeout)
	defer cancel()
	if err := n.connect(ctx, id); err != nil {
		return unreachableError{err}
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "parley signalling"), id, ChatProtocol)
	if err != nil {
		return unreachableError{fmt.Errorf("open chat stream to %s: %w", id.ShortString(), err)}
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	werr := make(chan error, 1)
	go func() {
		for _, e := range envs {
			if err := wire.WriteJSON(s, chatFrame{Type: "env", Env: e}, MaxChatFrame); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	want := map[string]bool{}
	for _, o := range outs {
		want[o.ID] = true
	}
	var refused error
	now := n.cfg.Now().UnixMilli()
	for range outs {
		b, err := wire.ReadFrame(s, MaxChatFrame)
		if err != nil {
			s.Reset()
			<-werr
			return fmt.Errorf("read ack from %s: %w", id.ShortString(), err)
		}
		f, err := decodeChatFrame(b)
		if err != nil || f.Type != "ack" || !want[f.ID] {
			s.Reset()
			<-werr
			return fmt.Errorf("bad ack from %s: %v", id.ShortString(), err)
		}
		if f.Held {
			// Not taken, not refused for good: deliver retries it later.
			refused = fmt.Errorf("%s held %s: %s", id.ShortString(), f.ID, f.Err)
			continue
		}
		if f.Err != "" {
			refused = fmt.Errorf("%s refused %s: %s", id.ShortString(), f.ID, f.Err)
			state[f.ID] = outRefused
			n.store.MarkOut(context.Background(), f.ID, id.String(), outRefused, now, f.Err)
			continue
		}
		state[f.ID] = outDelivered
		if err := n.store.MarkOut(context.Background(), f.ID, id.String(), outDelivered, now, ""); err != nil {
			return err
		}
	}
	if err := <-werr; err != nil {
		return err
	}
	return refused
}

// mailboxHolders are the supernodes that keep mail for an account: the k
// closest to it in the DHT keyspace, in distinct sites where possible.
func (n *Node) mailboxHolders(ctx context.Context, account []byte) ([]peer.ID, error) {
	key := mailbox.Key(account)
	peers, err := n.dht.GetClosestPeers(ctx, key)
	if err != nil && len(peers) == 0 {
		return nil, fmt.Errorf("find mailboxes: %w", err)
	}
	sorted := kb.SortClosestPeers(peers, kb.ConvertKey(key))
	return mailbox.PickHolders(sorted, n.cfg.MailboxK, func(p peer.ID) string {
		return mailbox.Site(n.host.Peerstore().Addrs(p))
	}), nil
}

// deposit leaves envelopes with every mailbox of the recipient's account.
// An envelope counts as left only when every holder took it, so losing all
// but one holder loses nothing.
func (n *Node) deposit(ctx context.Context, device peer.ID, rec *discovery.HandleRecord, outs []Outgoing, envs [][]byte, state map[string]int) error {
	if len(outs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*n.cfg.DeliveryTimeout)
	defer cancel()
	holders, err := n.mailboxHolders(ctx, rec.Account)
	if err == nil && len(holders) == 0 {
		err = errors.New("no supernode keeps mail")
	}
	if err != nil {
		n.metrics.deposits.WithLabelValues("error").Inc()
		return err
	}
	expires := n.cfg.Now().Add(mailbox.DefaultTTL).UnixMilli()
	for len(outs) > 0 {
		k := min(len(outs), mailbox.MaxItemsPerPut)
		items := make([]mailbox.Item, k)
		for i := range items {
			items[i] = mailbox.Item{ID: outs[i].ID, To: device.String(), Account: rec.Account, From: n.ID().String(), ExpiresMS: expires, Env: envs[i]}
		}
		took := make([]int, k)
		var why []string
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, h := range holders {
			wg.Add(1)
			go func(h peer.ID) {
				defer wg.Done()
				res, err := mailbox.Put(ctx, n.host, h, items, false)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					why = append(why, err.Error())
					return
				}
				for i, r := range res {
					if r.Err == "" {
						took[i]++
					} else {
						why = append(why, h.ShortString()+": "+r.Err)
					}
				}
			}(h)
		}
		wg.Wait()
		if len(why) > 0 {
			n.metrics.deposits.WithLabelValues("error").Inc()
		} else {
			n.metrics.deposits.WithLabelValues("ok").Inc()
		}
		now := n.cfg.Now().UnixMilli()
		for i := range items {
			if took[i] == len(holders) {
				state[items[i].ID] = outMailbox
				n.store.MarkOut(context.Background(), items[i].ID, device.String(), outMailbox, now, "")
			}
		}
		if len(why) > 0 {
			return fmt.Errorf("%d of %d mailboxes took it (%s)", min(took[0], len(holders)), len(holders), why[0])
		}
		outs, envs = outs[k:], envs[k:]
	}
	return nil
}

// FetchMailbox takes this device's envelopes from its mailboxes, commits
// each, and lets the mailboxes delete what was committed. It asks the
// supernodes it is connected to at once and the holders a DHT lookup names as
// they are found, so a lookup slowed by dead supernodes does not hold up mail
// a live holder has. It returns how many envelopes were handed over.
func (n *Node) FetchMailbox(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	asked := map[peer.ID]bool{}
	total := 0
	var wg sync.WaitGroup
	fetch := func(h peer.ID) {
		mu.Lock()
		if asked[h] {
			mu.Unlock()
			return
		}
		asked[h] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := mailbox.Fetch(ctx, n.host, h, n.ID(), func(it mailbox.Item) error {
				_, err := n.receiveEnvelope(it.Env, h, true)
				if err != nil && n.ctx.Err() != nil {
					return mailbox.ErrRetryLater
				}
				if errors.Is(err, ErrHeld) {
					// The holder keeps it until its sender can be verified.
					n.badInput.Warn("mailbox envelope held", "holder", h, "id", it.ID, "err", err)
					return fmt.Errorf("%w: %w", mailbox.ErrRetryLater, err)
				}
				if err != nil {
					n.log.Warn("mailbox envelope refused", "holder", h, "id", it.ID, "err", err)
				}
				return err
			})
			if err != nil {
				n.log.Debug("fetch mailbox", "holder", h, "err", err)
			}
			n.metrics.fetches.WithLabelValues(result(err)).Inc()
			n.metrics.fetched.Add(float64(got))
			mu.Lock()
			total += got
			mu.Unlock()
		}()
	}
	for _, sn := range n.cfg.Bootstrap {
		if n.host.Network().Connectedness(sn.ID) == network.Connected {
			fetch(sn.ID)
		}
	}
	if holders, err := n.mailboxHolders(ctx, n.id.AccountPub); err == nil {
		for _, h := range holders {
			fetch(h)
		}
	} else {
		n.log.Debug("find mailboxes", "err", err)
	}
	wg.Wait()
	if total > 0 {
		n.log.Info("mailbox fetched", "envelopes", total)
	}
	return total
}

func randBytes(k int) []byte {
	b := make([]byte, k)
	rand.Read(b)
	return b
}

func shortPeer(s string) string {
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}
