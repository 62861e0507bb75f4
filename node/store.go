package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

const storeFile = "parley.db"

// Store is a device's durable state: chat history, the outbox of deliveries
// not yet acknowledged, and the account keys of contacts first seen.
// Every write is committed (synchronous=FULL) before the caller acknowledges
// anything to a peer.
type Store struct{ db *sql.DB }

// Message is a chat message as stored.
type Message struct {
	ID          string `json:"id"`
	Conv        string `json:"conv"`
	From        string `json:"from"`
	FromDevice  string `json:"from_device"`
	Lamport     uint64 `json:"lamport"`
	SentMS      int64  `json:"sent_ms"`
	ReceivedMS  int64  `json:"received_ms,omitempty"`
	Body        string `json:"body"`
	Outgoing    bool   `json:"outgoing"`
	Delivered   int    `json:"delivered"`   // outgoing: devices that acknowledged
	Undelivered int    `json:"undelivered"` // outgoing: devices still pending
}

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
	outgoing INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conv ON messages(conv, lamport, id);
CREATE TABLE IF NOT EXISTS deliveries(
	msg_id TEXT NOT NULL REFERENCES messages(id),
	device TEXT NOT NULL,
	handle TEXT NOT NULL,
	delivered_ms INTEGER NOT NULL DEFAULT 0,
	attempts INTEGER NOT NULL DEFAULT 0,
	next_ms INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	PRIMARY KEY(msg_id, device)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(delivered_ms, next_ms);
CREATE TABLE IF NOT EXISTS contacts(
	handle TEXT PRIMARY KEY,
	account BLOB NOT NULL,
	first_seen_ms INTEGER NOT NULL
);
`

// OpenStore opens (creating if needed) the database under home.
func OpenStore(home string) (*Store, error) {
	path := filepath.Join(home, storeFile)
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and this keeps
	// read-your-writes trivially true.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// NextLamport returns one more than the highest clock seen in conv.
func (s *Store) NextLamport(ctx context.Context, conv string) (uint64, error) {
	var max sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT MAX(lamport) FROM messages WHERE conv=?`, conv).Scan(&max)
	if err != nil {
		return 0, err
	}
	return uint64(max.Int64) + 1, nil
}

// AddOutgoing stores a message this device sends, with one pending delivery
// per target device, in one transaction.
func (s *Store) AddOutgoing(ctx context.Context, m Message, targets []Target) error {
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries(msg_id,device,handle) VALUES(?,?,?)`, m.ID, t.Device, t.Handle); err != nil {
			return fmt.Errorf("store delivery of %s: %w", m.ID, err)
		}
	}
	return tx.Commit()
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

// Target is one device a message must reach.
type Target struct {
	Handle string
	Device string // peer ID
}

// Pending is an outgoing message still owed to one device.
type Pending struct {
	Target
	Msg      Message
	Attempts int
}

// PendingDeliveries returns up to limit deliveries due at nowMS, oldest first.
func (s *Store) PendingDeliveries(ctx context.Context, nowMS int64, limit int) ([]Pending, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT d.device, d.handle, d.attempts, m.id, m.conv, m.sender, m.sender_device, m.lamport, m.sent_ms, m.body
		FROM deliveries d JOIN messages m ON m.id = d.msg_id
		WHERE d.delivered_ms = 0 AND d.next_ms <= ?
		ORDER BY m.conv, m.lamport, m.id LIMIT ?`, nowMS, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		if err := rows.Scan(&p.Device, &p.Handle, &p.Attempts, &p.Msg.ID, &p.Msg.Conv, &p.Msg.From, &p.Msg.FromDevice, &p.Msg.Lamport, &p.Msg.SentMS, &p.Msg.Body); err != nil {
			return nil, err
		}
		p.Msg.Outgoing = true
		out = append(out, p)
	}
	return out, rows.Err()
}

// MarkDelivered records a device's acknowledgement.
func (s *Store) MarkDelivered(ctx context.Context, msgID, device string, nowMS int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE deliveries SET delivered_ms=?, last_error='' WHERE msg_id=? AND device=? AND delivered_ms=0`, nowMS, msgID, device)
	return err
}

// MarkFailed records a failed attempt and when to try again.
func (s *Store) MarkFailed(ctx context.Context, msgID, device string, nextMS int64, why string) error {
	if len(why) > 200 {
		why = why[:200]
	}
	_, err := s.db.ExecContext(ctx, `UPDATE deliveries SET attempts=attempts+1, next_ms=?, last_error=? WHERE msg_id=? AND device=? AND delivered_ms=0`, nextMS, why, msgID, device)
	return err
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
			SELECT m.id, m.conv, m.sender, m.sender_device, m.lamport, m.sent_ms, m.received_ms, m.body, m.outgoing,
				(SELECT COUNT(*) FROM deliveries d WHERE d.msg_id=m.id AND d.delivered_ms>0),
				(SELECT COUNT(*) FROM deliveries d WHERE d.msg_id=m.id AND d.delivered_ms=0)
			FROM messages m WHERE m.conv=? ORDER BY m.lamport DESC, m.id DESC LIMIT ?
		) ORDER BY 5, 1`, conv, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		if err := rows.Scan(&m.ID, &m.Conv, &m.From, &m.FromDevice, &m.Lamport, &m.SentMS, &m.ReceivedMS, &m.Body, &m.Outgoing, &m.Delivered, &m.Undelivered); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ErrContactKeyChanged is returned when a handle shows up with an account key
// other than the one first seen for it.
var ErrContactKeyChanged = errors.New("account key changed")

// CheckContact pins a handle's account key on first sight (trust on first
// use) and refuses a different key later.
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
