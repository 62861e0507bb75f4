package node

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

// LinkProtocol joins a new device to an account.
//
// The new device dials the device holding the account key and sends one
// join frame: the one-time secret from the pairing code and its own device
// entry (peer ID, box key, name); the peer ID must be the dialing peer. The
// primary answers with a linked frame carrying the newly signed handle record,
// or an error. A code works once and for LinkCodeTTL.
const LinkProtocol = "/parley/link/1.0.0"

// SyncProtocol hands a device's history to another device of the same
// account: the asking device sends nothing; the other answers with batches of
// messages and groups (sync frames) and closes. Only devices listed in the
// account's record may ask.
const SyncProtocol = "/parley/sync/1.0.0"

// Limits of linking and syncing.
const (
	LinkCodeTTL      = 10 * time.Minute
	maxLinkFrame     = 16 << 10
	maxSyncFrame     = 4 << 20
	syncBatch        = 200
	maxPendingCodes  = 8
	linkCodePrefix   = "parley-link:"
	linkSecretLength = 16
)

// ErrBadCode is returned for a pairing code that is malformed, unknown,
// used or expired.
var ErrBadCode = errors.New("pairing code not valid")

type linkFrame struct {
	Type   string            `json:"t"` // "join", "linked" or "error"
	Secret string            `json:"secret,omitempty"`
	Device *discovery.Device `json:"device,omitempty"`
	Record []byte            `json:"record,omitempty"`
	Err    string            `json:"err,omitempty"`
}

type syncFrame struct {
	Messages []Message `json:"messages,omitempty"`
	Groups   []Group   `json:"groups,omitempty"`
}

type linkCodes struct {
	mu    sync.Mutex
	codes map[string]time.Time // secret -> expiry
}

// LinkCode makes a one-time pairing code for a new device. Only the device
// holding the account key can link.
func (n *Node) LinkCode() (string, error) {
	if n.id.Account == nil {
		return "", errors.New("this device does not hold the account key; run 'parley id link' on the device you first set up")
	}
	secret := hex.EncodeToString(randBytes(linkSecretLength))
	n.links.mu.Lock()
	defer n.links.mu.Unlock()
	now := n.cfg.Now()
	for s, exp := range n.links.codes {
		if now.After(exp) {
			delete(n.links.codes, s)
		}
	}
	if len(n.links.codes) >= maxPendingCodes {
		return "", fmt.Errorf("%d pairing codes are already waiting; use one or wait %s", maxPendingCodes, LinkCodeTTL)
	}
	n.links.codes[secret] = now.Add(LinkCodeTTL)
	return linkCodePrefix + n.ID().String() + ":" + secret, nil
}

// ParseLinkCode splits a pairing code into the primary device and the secret.
func ParseLinkCode(code string) (peer.ID, string, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(code), linkCodePrefix)
	parts := strings.Split(rest, ":")
	if !ok || len(parts) != 2 || len(parts[1]) != 2*linkSecretLength {
		return "", "", fmt.Errorf("%w: expected %s<peer id>:<secret>", ErrBadCode, linkCodePrefix)
	}
	id, err := peer.Decode(parts[0])
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrBadCode, err)
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
		return "", "", fmt.Errorf("%w: secret is not hex", ErrBadCode)
	}
	return id, parts[1], nil
}

func (n *Node) takeCode(secret string) bool {
	n.links.mu.Lock()
	defer n.links.mu.Unlock()
	now := n.cfg.Now()
	for s, exp := range n.links.codes {
		if subtle.ConstantTimeCompare([]byte(s), []byte(secret)) == 1 {
			delete(n.links.codes, s)
			return now.Before(exp)
		}
	}
	return false
}

func (n *Node) handleLink(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	s.SetDeadline(n.cfg.Now().Add(30 * time.Second))
	var f linkFrame
	reply := func(r linkFrame) {
		if err := wire.WriteJSON(s, r, maxLinkFrame); err != nil {
			// The joining device reports the link as failed; a device
			// entry already published stays in the record.
			n.log.Warn("link reply not delivered", "peer", remote, "reply", r.Type, "err", err)
		}
	}
	if err := wire.ReadJSON(s, &f, maxLinkFrame); err != nil || f.Type != "join" || f.Device == nil {
		s.Reset()
		return
	}
	if !n.takeCode(f.Secret) {
		n.log.Warn("link refused: bad or used code", "peer", remote)
		reply(linkFrame{Type: "error", Err: ErrBadCode.Error()})
		return
	}
	if f.Device.PeerID != remote.String() || len(f.Device.BoxKey) != 32 || len(f.Device.Name) > 64 {
		reply(linkFrame{Type: "error", Err: "device entry does not match the joining peer"})
		return
	}
	rec, err := n.id.AddDevice(*f.Device, n.cfg.Now())
	if err == nil {
		ctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
		err = discovery.Publish(ctx, n.dht, rec)
		cancel()
	}
	if err != nil {
		reply(linkFrame{Type: "error", Err: err.Error()})
		return
	}
	n.log.Info("device linked", "device", remote, "name", f.Device.Name)
	reply(linkFrame{Type: "linked", Record: rec})
}

// JoinOptions configures JoinAccount.
type JoinOptions struct {
	Home       string
	Code       string
	DeviceName string
	Bootstrap  []peer.AddrInfo
	Timeout    time.Duration // 0 means 30 s
}

// JoinAccount makes a new device under home and links it to the account of
// the device that made the code. The primary's daemon must be running.
func JoinAccount(ctx context.Context, o JoinOptions) (*Identity, error) {
	primary, secret, err := ParseLinkCode(o.Code)
	if err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	id, err := JoinIdentity(o.Home, o.DeviceName)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	h, err := libp2p.New(libp2p.Identity(id.DeviceKey), libp2p.ListenAddrStrings("/ip4/0.0.0.0/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		return nil, err
	}
	defer h.Close()
	d, err := discovery.NewDHT(ctx, h, discovery.DHTConfig{Bootstrap: o.Bootstrap})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if _, err := discovery.Bootstrap(ctx, h, o.Bootstrap, o.Timeout); err != nil {
		return nil, err
	}
	if err := discovery.WaitRoutable(ctx, d); err != nil {
		return nil, err
	}
	pi, err := d.FindPeer(ctx, primary)
	if err != nil {
		return nil, fmt.Errorf("find the linking device %s (is its daemon running?): %w", primary.ShortString(), err)
	}
	if err := h.Connect(ctx, pi); err != nil {
		return nil, fmt.Errorf("reach the linking device: %w", err)
	}
	s, err := h.NewStream(ctx, primary, LinkProtocol)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	defer s.Close()
	dev := id.Self()
	if err := wire.WriteJSON(s, linkFrame{Type: "join", Secret: secret, Device: &dev}, maxLinkFrame); err != nil {
		return nil, err
	}
	var f linkFrame
	if err := wire.ReadJSON(s, &f, maxLinkFrame); err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	if f.Type != "linked" {
		return nil, fmt.Errorf("link refused: %s", f.Err)
	}
	rec, err := discovery.ParseHandleRecord(f.Record)
	if err != nil {
		return nil, err
	}
	// The record must be signed by the account of the device we dialled.
	if !rec.HasDevice(primary) {
		return nil, errors.New("link: the record does not list the linking device")
	}
	if err := id.AdoptRecord(f.Record); err != nil {
		return nil, err
	}
	return id, nil
}

// Unlink removes a device from the account and publishes the new record;
// senders stop addressing it once they see the record (within a resolve
// cache lifetime, 30 s).
func (n *Node) Unlink(ctx context.Context, device string) ([]byte, error) {
	if n.id.Account == nil {
		return nil, errors.New("this device does not hold the account key; unlink from the device you first set up")
	}
	if device == n.ID().String() {
		return nil, errors.New("a device cannot unlink itself")
	}
	rec, err := n.id.RemoveDevice(device, n.cfg.Now())
	if err != nil {
		return nil, err
	}
	if err := discovery.Publish(ctx, n.dht, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// Devices returns the account's devices as this device knows them.
func (n *Node) Devices() []discovery.Device {
	rec, err := discovery.ParseHandleRecord(n.id.Record())
	if err != nil {
		return nil
	}
	return rec.Devices
}

func (n *Node) handleSync(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	rec, err := discovery.ParseHandleRecord(n.id.Record())
	if err != nil || !rec.HasDevice(remote) {
		n.log.Warn("sync refused: not a device of this account", "peer", remote)
		s.Reset()
		return
	}
	s.SetDeadline(n.cfg.Now().Add(2 * time.Minute))
	groups, err := n.store.Groups(n.ctx)
	if err != nil {
		s.Reset()
		return
	}
	if err := wire.WriteJSON(s, syncFrame{Groups: groups}, maxSyncFrame); err != nil {
		return
	}
	err = n.store.AllMessages(n.ctx, syncBatch, func(batch []Message) error {
		for i := range batch {
			batch[i].Devices = nil
		}
		return wire.WriteJSON(s, syncFrame{Messages: batch}, maxSyncFrame)
	})
	if err != nil {
		s.Reset()
	}
}

// SyncHistory copies the history of another device of this account that
// is online. It returns how many messages were new here.
func (n *Node) SyncHistory(ctx context.Context) (int, error) {
	var lastErr error = errors.New("no other device of this account is online")
	for _, d := range n.Devices() {
		id, err := peer.Decode(d.PeerID)
		if err != nil || id == n.ID() {
			continue
		}
		got, err := n.syncFrom(ctx, id)
		if err == nil {
			return got, nil
		}
		lastErr = err
	}
	return 0, lastErr
}

func (n *Node) syncFrom(ctx context.Context, id peer.ID) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := n.connect(ctx, id); err != nil {
		return 0, err
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "parley signalling"), id, SyncProtocol)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(2 * time.Minute))
	added := 0
	for {
		var f syncFrame
		err := wire.ReadJSON(s, &f, maxSyncFrame)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return added, fmt.Errorf("sync from %s: %w", id.ShortString(), err)
		}
		for i := range f.Groups {
			if err := f.Groups[i].check(); err != nil {
				continue
			}
			if _, err := n.store.SaveGroup(ctx, &f.Groups[i], n.cfg.Now().UnixMilli()); err != nil { // first seen stands
				return added, fmt.Errorf("sync from %s: save group: %w", id.ShortString(), err)
			}
		}
		for _, m := range f.Messages {
			w := wireMsg{ID: m.ID, Conv: m.Conv, From: m.From, Lamport: m.Lamport, SentMS: m.SentMS, Body: m.Body}
			if w.checkFields() != nil {
				continue
			}
			m.Outgoing = false
			fresh, err := n.store.AddIncoming(ctx, m)
			if err != nil {
				return added, err
			}
			if fresh {
				added++
			}
		}
	}
	n.log.Info("history synced", "from", id, "new", added)
	return added, nil
}
