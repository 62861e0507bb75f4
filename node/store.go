package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/parley-net/parley/internal/homelock"
)

const storeFile = "parley.db"

// Store is a device's durable state: chat history, the outbox of deliveries
// not yet acknowledged, and the account keys of contacts first seen.
// Every write is committed (synchronous=FULL) before the caller acknowledges
// anything to a peer.
type Store struct{ db *sql.DB }

// Message is a chat message as stored.
type Message struct {
	ID         string `json:"id"`
	Conv       string `json:"conv"`
	From       string `json:"from"`
	FromDevice string `json:"from_device"`
	Lamport    uint64 `json:"lamport"`
	SentMS     int64  `json:"sent_ms"`
	ReceivedMS int64  `json:"received_ms,omitempty"`
	Body       string `json:"body"`
	Outgoing   bool   `json:"outgoing"`
	// Outgoing messages: where each recipient device is.
	Devices []DeviceState `json:"devices,omitempty"`
}

// DeviceState is how far a message got on one device.
type DeviceState struct {
	Handle string `json:"handle"`
	Device string `json:"device"`
	State  string `json:"state"` // "sent" (queued), "mailbox", "delivered", "read", "refused"
	Error  string `json:"error,omitempty"`
}

// Outbox states.
const (
	outPending   = 0
	outMailbox   = 1
	outDelivered = 2
	outRefused   = 9
)

const schema = `
CREATE TABLE IF NOT EXISTS messages(
	id TEXT PRIMARY KEY,
	conv TEXT NOT NULL,
	sender TEXT NOT NULL,
	sender_device TEXT NOT NULL,
	lamport INTEGER NOT NULL,
	sent_ms INTEGER NOT NULL,
	received_ms INTEGER NOT NULL,
	body TEXT NOT NULL,
	outgoing INTEGER NOT NULL,
	read_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_conv ON messages(conv, lamport, id);
CREATE TABLE IF NOT EXISTS outbox(
	id TEXT NOT NULL,
	device TEXT NOT NULL,
	handle TEXT NOT NULL,
	kind TEXT NOT NULL,
	payload BLOB NOT NULL,
	state INTEGER NOT NULL DEFAULT 0,
	mailbox_ms INTEGER NOT NULL DEFAULT 0,
	delivered_ms INTEGER NOT NULL DEFAULT 0,
	read_ms INTEGER NOT NULL DEFAULT 0,
	attempts INTEGER NOT NULL DEFAULT 0,
	next_ms INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	PRIMARY KEY(id, device)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, next_ms);
CREATE TABLE IF NOT EXISTS contacts(
	handle TEXT PRIMARY KEY,
	account BLOB NOT NULL,
	first_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records(
	handle TEXT PRIMARY KEY,
	record BLOB NOT NULL,
	seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS groups(
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	members TEXT NOT NULL,
	created_ms INTEGER NOT NULL
);
`

// OpenStore opens (creating if needed) the database under home.
func OpenStore(home string) (*Store, error) {
	path := filepath.Join(home, storeFile)
	if err := homelock.PrivateFile(path); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and this keeps
	// read-your-writes trivially true.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		_ = db.Close() // nothing was written: the schema failed
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// closeRows closes rows after a loop over rows.Next, and returns what
// ended the loop early if anything did: a loop that stopped on an error
// must not pass for one that read every row.
func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

// NextLamport returns one more than the highest clock seen in conv.
func (s *Store) NextLamport(ctx context.Context, conv string) (uint64, error) {
	var max sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT MAX(lamport) FROM messages WHERE conv=?`, conv).Scan(&max)
	if err != nil {
		return 0, err
	}
	return uint64(max.Int64) + 1, nil
}

// Outgoing is one envelope owed to one device.
type Outgoing struct {
	ID       string // envelope ID (a message's ID)
	Device   string
	Handle   string
	Kind     string
	Payload  []byte // JSON Payload, sealed per device at delivery
	Attempts int
}

// AddOutgoing stores a message this device sends and the envelopes it owes
// every target device, in one transaction: once it returns, a crash loses
// nothing.
func (s *Store) AddOutgoing(ctx context.Context, m Message, payload []byte, targets []Target) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO messages(id,conv,sender,sender_device,lamport,sent_ms,received_ms,body,outgoing) VALUES(?,?,?,?,?,?,?,?,1)`,
		m.ID, m.Conv, m.From, m.FromDevice, m.Lamport, m.SentMS, m.SentMS, m.Body); err != nil {
		return fmt.Errorf("store message %s: %w", m.ID, err)
	}
	for _, t := range targets {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox(id,device,handle,kind,payload) VALUES(?,?,?,?,?)`, m.ID, t.Device, t.Handle, kindMessage, payload); err != nil {
			return fmt.Errorf("store delivery of %s: %w", m.ID, err)
		}
	}
	return tx.Commit()
}

// Enqueue stores an envelope that is not a chat message (a receipt).
func (s *Store) Enqueue(ctx context.Context, id, kind string, payload []byte, t Target) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO outbox(id,device,handle,kind,payload) VALUES(?,?,?,?,?)`, id, t.Device, t.Handle, kind, payload)
	return err
}

// AddIncoming stores a received message once. It reports whether the
// message was new; a message seen before is left as it was.
func (s *Store) AddIncoming(ctx context.Context, m Message) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO messages(id,conv,sender,sender_device,lamport,sent_ms,received_ms,body,outgoing) VALUES(?,?,?,?,?,?,?,?,0)`,
		m.ID, m.Conv, m.From, m.FromDevice, m.Lamport, m.SentMS, m.ReceivedMS, m.Body)
	if err != nil {
		return false, fmt.Errorf("store message %s: %w", m.ID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Target is one device an envelope must reach.
type Target struct {
	Handle string
	Device string // peer ID
}

// PendingOut returns up to limit envelopes due at nowMS, in conversation
// order.
func (s *Store) PendingOut(ctx context.Context, nowMS int64, limit int) ([]Outgoing, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT o.id, o.device, o.handle, o.kind, o.payload, o.attempts
		FROM outbox o LEFT JOIN messages m ON m.id = o.id
		WHERE o.state = 0 AND o.next_ms <= ?
		ORDER BY COALESCE(m.conv, ''), COALESCE(m.lamport, 0), o.id LIMIT ?`, nowMS, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Outgoing
	for rows.Next() {
		var o Outgoing
		if err := rows.Scan(&o.ID, &o.Device, &o.Handle, &o.Kind, &o.Payload, &o.Attempts); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// OutboxPending counts envelopes neither delivered nor left at a mailbox
// nor refused.
func (s *Store) OutboxPending(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE state = 0`).Scan(&n)
	return n, err
}

// MarkOut moves an envelope forward: to a mailbox, to its device, or to
// refused (the device will never take it).
func (s *Store) MarkOut(ctx context.Context, id, device string, state int, nowMS int64, why string) error {
	var err error
	switch state {
	case outMailbox:
		_, err = s.db.ExecContext(ctx, `UPDATE outbox SET state=1, mailbox_ms=?, last_error='' WHERE id=? AND device=? AND state=0`, nowMS, id, device)
	case outDelivered:
		_, err = s.db.ExecContext(ctx, `UPDATE outbox SET state=2, delivered_ms=?, last_error='' WHERE id=? AND device=? AND state IN (0,1)`, nowMS, id, device)
	case outRefused:
		_, err = s.db.ExecContext(ctx, `UPDATE outbox SET state=9, last_error=? WHERE id=? AND device=? AND state=0`, why, id, device)
	default:
		err = fmt.Errorf("bad outbox state %d", state)
	}
	return err
}

// MarkRetry records a failed attempt and when to try again.
func (s *Store) MarkRetry(ctx context.Context, id, device string, nextMS int64, why string) error {
	if len(why) > 200 {
		why = why[:200]
	}
	_, err := s.db.ExecContext(ctx, `UPDATE outbox SET attempts=attempts+1, next_ms=?, last_error=? WHERE id=? AND device=? AND state=0`, nextMS, why, id, device)
	return err
}

// ApplyReceipt records a device's receipt for messages this device sent.
func (s *Store) ApplyReceipt(ctx context.Context, device, state string, ids []string, nowMS int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `UPDATE outbox SET state=2, delivered_ms=CASE WHEN delivered_ms=0 THEN ? ELSE delivered_ms END WHERE id=? AND device=? AND kind='msg' AND state<>9`, nowMS, id, device); err != nil {
			return err
		}
		if state == "read" {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET read_ms=? WHERE id=? AND device=? AND kind='msg' AND read_ms=0`, nowMS, id, device); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

// MarkRead marks conv's unread incoming messages read and returns them by
// sending device, so read receipts can go out.
func (s *Store) MarkRead(ctx context.Context, conv string, nowMS int64) (map[Target][]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, sender, sender_device FROM messages WHERE conv=? AND outgoing=0 AND read_ms=0`, conv)
	if err != nil {
		return nil, err
	}
	out := map[Target][]string{}
	var ids []string
	for rows.Next() {
		var id string
		var t Target
		if err := rows.Scan(&id, &t.Handle, &t.Device); err != nil {
			rows.Close()
			return nil, err
		}
		out[t] = append(out[t], id)
		ids = append(ids, id)
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, err := s.db.ExecContext(ctx, `UPDATE messages SET read_ms=? WHERE id=?`, nowMS, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// History returns conv's messages in conversation order: logical clock, ties
// broken by message ID, so every device shows the same order. limit <= 0
// means all; otherwise the newest limit messages.
func (s *Store) History(ctx context.Context, conv string, limit int) ([]Message, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.db.QueryContext(ctx, `
		SELECT * FROM (
			SELECT id, conv, sender, sender_device, lamport, sent_ms, received_ms, body, outgoing
			FROM messages WHERE conv=? ORDER BY lamport DESC, id DESC LIMIT ?
		) ORDER BY 5, 1`, conv, limit)
	if err != nil {
		return nil, err
	}
	var out []Message
	for rows.Next() {
		var m Message
		if err := rows.Scan(&m.ID, &m.Conv, &m.From, &m.FromDevice, &m.Lamport, &m.SentMS, &m.ReceivedMS, &m.Body, &m.Outgoing); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, m)
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	for i := range out {
		if !out[i].Outgoing {
			continue
		}
		if out[i].Devices, err = s.deviceStates(ctx, out[i].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Store) deviceStates(ctx context.Context, id string) ([]DeviceState, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT handle, device, state, read_ms, last_error FROM outbox WHERE id=? AND kind='msg' ORDER BY handle, device`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DeviceState
	for rows.Next() {
		var d DeviceState
		var state int
		var read int64
		if err := rows.Scan(&d.Handle, &d.Device, &state, &read, &d.Error); err != nil {
			return nil, err
		}
		switch {
		case read > 0:
			d.State = "read"
		case state == outDelivered:
			d.State = "delivered"
		case state == outMailbox:
			d.State = "mailbox"
		case state == outRefused:
			d.State = "refused"
		default:
			d.State = "sent"
		}
		if d.State == "delivered" || d.State == "read" {
			d.Error = ""
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// AllMessages hands every message to fn in batches, in conversation order.
func (s *Store) AllMessages(ctx context.Context, batch int, fn func([]Message) error) error {
	after := ""
	for {
		rows, err := s.db.QueryContext(ctx, `SELECT id, conv, sender, sender_device, lamport, sent_ms, received_ms, body FROM messages WHERE id > ? ORDER BY id LIMIT ?`, after, batch)
		if err != nil {
			return err
		}
		var out []Message
		for rows.Next() {
			var m Message
			if err := rows.Scan(&m.ID, &m.Conv, &m.From, &m.FromDevice, &m.Lamport, &m.SentMS, &m.ReceivedMS, &m.Body); err != nil {
				rows.Close()
				return err
			}
			out = append(out, m)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		if err := fn(out); err != nil {
			return err
		}
		after = out[len(out)-1].ID
	}
}

// MessageCount is how many messages the store holds.
func (s *Store) MessageCount(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM messages`).Scan(&n)
	return n, err
}

// SaveGroup stores a group the first time it is seen and returns the
// group as stored: a later message cannot change who is in it.
func (s *Store) SaveGroup(ctx context.Context, g *Group, nowMS int64) (*Group, error) {
	members := strings.Join(g.Members, ",")
	if _, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO groups(id,name,members,created_ms) VALUES(?,?,?,?)`, g.ID, g.Name, members, nowMS); err != nil {
		return nil, err
	}
	var out Group
	var stored string
	err := s.db.QueryRowContext(ctx, `SELECT id, name, members FROM groups WHERE id=?`, g.ID).Scan(&out.ID, &out.Name, &stored)
	out.Members = strings.Split(stored, ",")
	return &out, err
}

// Groups returns the groups this device knows, by name.
func (s *Store) Groups(ctx context.Context) ([]Group, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, members FROM groups ORDER BY name, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Group
	for rows.Next() {
		var g Group
		var members string
		if err := rows.Scan(&g.ID, &g.Name, &members); err != nil {
			return nil, err
		}
		g.Members = strings.Split(members, ",")
		out = append(out, g)
	}
	return out, rows.Err()
}

// ErrContactKeyChanged is returned when a handle shows up with an account key
// other than the one first seen for it.
var ErrContactKeyChanged = errors.New("account key changed")

// Contact returns the account key pinned for a handle, or nil.
func (s *Store) Contact(ctx context.Context, handle string) ([]byte, error) {
	var have []byte
	err := s.db.QueryRowContext(ctx, `SELECT account FROM contacts WHERE handle=?`, handle).Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return have, err
}

// CheckContact pins a handle's account key on first sight and refuses a
// different key later. Callers pin only keys a verified DHT lookup found,
// never one a peer presented.
func (s *Store) CheckContact(ctx context.Context, handle string, account []byte, nowMS int64) error {
	var have []byte
	err := s.db.QueryRowContext(ctx, `SELECT account FROM contacts WHERE handle=?`, handle).Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = s.db.ExecContext(ctx, `INSERT OR IGNORE INTO contacts(handle,account,first_seen_ms) VALUES(?,?,?)`, handle, account, nowMS)
		return err
	}
	if err != nil {
		return err
	}
	if string(have) != string(account) {
		return fmt.Errorf("%w for %s: someone else may be using this handle", ErrContactKeyChanged, handle)
	}
	return nil
}

// SaveRecord keeps the last handle record resolved for a handle, so the
// device can still address mail to it while no supernode is reachable.
func (s *Store) SaveRecord(ctx context.Context, handle string, rec []byte, nowMS int64) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO records(handle,record,seen_ms) VALUES(?,?,?)`, handle, rec, nowMS)
	return err
}

// LoadRecord returns the record SaveRecord kept for handle, or nil.
func (s *Store) LoadRecord(ctx context.Context, handle string) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT record FROM records WHERE handle=?`, handle).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// RetryNow makes every envelope waiting in the outbox due at nowMS: the
// network came back, so backoffs earned while it was away no longer apply.
func (s *Store) RetryNow(ctx context.Context, nowMS int64) (int64, error) {
	r, err := s.db.ExecContext(ctx, `UPDATE outbox SET next_ms=? WHERE state=0 AND next_ms>?`, nowMS, nowMS)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}
