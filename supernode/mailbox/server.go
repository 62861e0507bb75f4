package mailbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/parley-net/parley/internal/wire"
)

// Defaults of Config.
const (
	DefaultTTL               = 30 * 24 * time.Hour
	DefaultReplicateInterval = 30 * time.Second
	streamTimeout            = 30 * time.Second
)

// Config configures a mailbox server.
type Config struct {
	// Home is the directory of mailbox.db. Required.
	Home string
	// Host serves the protocol. Required.
	Host host.Host
	// Closest returns the k supernodes (this one included, if it is among
	// them) closest to key, closest first. Required.
	Closest func(ctx context.Context, key string, k int) ([]peer.ID, error)
	// IsSupernode reports whether a peer is a supernode, whose replica puts
	// and deletions are accepted. Required.
	IsSupernode func(peer.ID) bool
	// K is how many supernodes keep each account's mail; 0 means DefaultK.
	K int
	// TTL is the longest an envelope is kept; 0 means DefaultTTL.
	TTL time.Duration
	// ReplicateInterval is how often holders check that the current k
	// closest supernodes have every envelope; 0 means DefaultReplicateInterval.
	ReplicateInterval time.Duration
	// MaxPerRecipient and MaxPerSender are quotas; 0 means the package limits.
	MaxPerRecipient, MaxPerSender int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Tap, when set, receives every byte the server reads from its streams:
	// a test hook that shows what a supernode sees.
	Tap io.Writer
}

// Server is a supernode's mailbox.
type Server struct {
	cfg Config
	db  *sql.DB
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	confirmed map[peer.ID]map[string]bool // holder -> item keys it is known to have
	notifee   *network.NotifyBundle
	tapMu     sync.Mutex
}

const schema = `
CREATE TABLE IF NOT EXISTS items(
	id TEXT NOT NULL,
	to_device TEXT NOT NULL,
	account BLOB NOT NULL,
	from_device TEXT NOT NULL,
	env BLOB NOT NULL,
	expires_ms INTEGER NOT NULL,
	stored_ms INTEGER NOT NULL,
	PRIMARY KEY(id, to_device)
);
CREATE INDEX IF NOT EXISTS items_to ON items(to_device, stored_ms);
CREATE INDEX IF NOT EXISTS items_from ON items(from_device);
CREATE TABLE IF NOT EXISTS tombstones(
	id TEXT NOT NULL,
	to_device TEXT NOT NULL,
	until_ms INTEGER NOT NULL,
	PRIMARY KEY(id, to_device)
);
`

// NewServer opens the mailbox database and serves Protocol on cfg.Host.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Home == "" || cfg.Host == nil || cfg.Closest == nil || cfg.IsSupernode == nil {
		return nil, errors.New("mailbox: Home, Host, Closest and IsSupernode are required")
	}
	if cfg.K == 0 {
		cfg.K = DefaultK
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.ReplicateInterval == 0 {
		cfg.ReplicateInterval = DefaultReplicateInterval
	}
	if cfg.MaxPerRecipient == 0 {
		cfg.MaxPerRecipient = MaxPerRecipient
	}
	if cfg.MaxPerSender == 0 {
		cfg.MaxPerSender = MaxPerSender
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	path := filepath.Join(cfg.Home, "mailbox.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open mailbox %s: %w", path, err)
	}
	s := &Server{cfg: cfg, db: db, log: cfg.Logger, confirmed: map[peer.ID]map[string]bool{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Host.SetStreamHandler(Protocol, s.handle)
	// A holder that went away may come back with an empty disk: what it
	// was known to hold is known no longer.
	s.notifee = &network.NotifyBundle{DisconnectedF: func(nw network.Network, c network.Conn) {
		if nw.Connectedness(c.RemotePeer()) != network.Connected {
			s.mu.Lock()
			delete(s.confirmed, c.RemotePeer())
			s.mu.Unlock()
		}
	}}
	cfg.Host.Network().Notify(s.notifee)
	s.wg.Add(1)
	go s.maintain()
	return s, nil
}

// Close stops serving and closes the database.
func (s *Server) Close() error {
	s.cfg.Host.RemoveStreamHandler(Protocol)
	s.cfg.Host.Network().StopNotify(s.notifee)
	s.cancel()
	s.wg.Wait()
	return s.db.Close()
}

// Count is how many envelopes the mailbox holds.
func (s *Server) Count() (int, error) {
	var n int
	err := s.db.QueryRow(`SELECT COUNT(*) FROM items`).Scan(&n)
	return n, err
}

type tapReader struct {
	r io.Reader
	s *Server
}

func (t tapReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.s.tapMu.Lock()
		t.s.cfg.Tap.Write(p[:n])
		t.s.tapMu.Unlock()
	}
	return n, err
}

func (s *Server) handle(st network.Stream) {
	remote := st.Conn().RemotePeer()
	st.SetDeadline(s.cfg.Now().Add(streamTimeout))
	var r io.Reader = st
	if s.cfg.Tap != nil {
		r = tapReader{r: st, s: s}
	}
	f, err := readFrame(r)
	if err == nil {
		switch f.Type {
		case "put":
			err = s.servePut(st, remote, f)
		case "fetch":
			err = s.serveFetch(st, r, remote, f)
		case "del":
			err = s.serveDel(remote, f)
		default:
			err = fmt.Errorf("%w: %s is not a request", ErrBadFrame, f.Type)
		}
	}
	if err != nil {
		s.log.Info("mailbox stream reset", "peer", remote, "err", err)
		st.Reset()
		return
	}
	st.Close()
}

func readFrame(r io.Reader) (*Frame, error) {
	b, err := wire.ReadFrame(r, MaxFrame)
	if err != nil {
		return nil, err
	}
	return DecodeFrame(b)
}

func (s *Server) servePut(st network.Stream, remote peer.ID, f *Frame) error {
	if f.Replica && !s.cfg.IsSupernode(remote) {
		return fmt.Errorf("replica put from %s, not a supernode", remote.ShortString())
	}
	now := s.cfg.Now()
	results := make([]Result, 0, len(f.Items))
	for _, it := range f.Items {
		res := Result{ID: it.ID}
		if err := s.store(now, remote, it, f.Replica); err != nil {
			res.Err = err.Error()
		}
		results = append(results, res)
	}
	return wire.WriteJSON(st, Frame{Type: "put-ok", Results: results}, MaxFrame)
}

// store commits one item, or says why not.
func (s *Server) store(now time.Time, remote peer.ID, it Item, replica bool) error {
	if !replica && it.From != remote.String() {
		return fmt.Errorf("sender %s is not the peer putting it", it.From)
	}
	if it.ExpiresMS <= now.UnixMilli() {
		return errors.New("already expired")
	}
	if max := now.Add(s.cfg.TTL).UnixMilli(); it.ExpiresMS > max {
		it.ExpiresMS = max
	}
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if tx.QueryRow(`SELECT COUNT(*) FROM tombstones WHERE id=? AND to_device=?`, it.ID, it.To).Scan(&n); n > 0 {
		return nil // delivered already: nothing to keep, nothing to retry
	}
	if tx.QueryRow(`SELECT COUNT(*) FROM items WHERE id=? AND to_device=?`, it.ID, it.To).Scan(&n); n > 0 {
		return nil
	}
	if tx.QueryRow(`SELECT COUNT(*) FROM items WHERE to_device=?`, it.To).Scan(&n); n >= s.cfg.MaxPerRecipient {
		return fmt.Errorf("mailbox of %s is full (%d envelopes)", shortID(it.To), s.cfg.MaxPerRecipient)
	}
	if !replica {
		if tx.QueryRow(`SELECT COUNT(*) FROM items WHERE from_device=?`, it.From).Scan(&n); n >= s.cfg.MaxPerSender {
			return fmt.Errorf("sender quota reached (%d envelopes waiting)", s.cfg.MaxPerSender)
		}
	}
	if _, err := tx.Exec(`INSERT INTO items(id,to_device,account,from_device,env,expires_ms,stored_ms) VALUES(?,?,?,?,?,?,?)`,
		it.ID, it.To, it.Account, it.From, it.Env, it.ExpiresMS, now.UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *Server) serveFetch(st network.Stream, r io.Reader, remote peer.ID, f *Frame) error {
	if f.Device != remote.String() {
		return fmt.Errorf("%s asked for the mail of %s", remote.ShortString(), shortID(f.Device))
	}
	rows, err := s.db.Query(`SELECT id, to_device, account, from_device, env, expires_ms FROM items WHERE to_device=? ORDER BY stored_ms, id LIMIT 1000`, f.Device)
	if err != nil {
		return err
	}
	var items []Item
	for rows.Next() {
		var it Item
		if err := rows.Scan(&it.ID, &it.To, &it.Account, &it.From, &it.Env, &it.ExpiresMS); err != nil {
			rows.Close()
			return err
		}
		items = append(items, it)
	}
	rows.Close()
	for i := range items {
		if err := wire.WriteJSON(st, Frame{Type: "item", Item: &items[i]}, MaxFrame); err != nil {
			return err
		}
	}
	if err := wire.WriteJSON(st, Frame{Type: "end"}, MaxFrame); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	for {
		a, err := readFrame(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if a.Type != "ack" {
			return fmt.Errorf("%w: expected ack, got %s", ErrBadFrame, a.Type)
		}
		if err := s.remove(f.Device, a.IDs); err != nil {
			return err
		}
		s.wg.Add(1)
		go s.tellHolders(f.Device, a.IDs, items)
	}
}

func (s *Server) serveDel(remote peer.ID, f *Frame) error {
	if !s.cfg.IsSupernode(remote) {
		return fmt.Errorf("del from %s, not a supernode", remote.ShortString())
	}
	return s.remove(f.Device, f.IDs)
}

// remove deletes delivered envelopes and leaves tombstones behind.
func (s *Server) remove(device string, ids []string) error {
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	until := s.cfg.Now().Add(s.cfg.TTL).UnixMilli()
	for _, id := range ids {
		if _, err := tx.Exec(`DELETE FROM items WHERE id=? AND to_device=?`, id, device); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT OR REPLACE INTO tombstones(id,to_device,until_ms) VALUES(?,?,?)`, id, device, until); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// tellHolders passes a device's acknowledgement on to the other holders.
func (s *Server) tellHolders(device string, ids []string, items []Item) {
	defer s.wg.Done()
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	holders, err := s.cfg.Closest(ctx, Key(items[0].Account), s.cfg.K)
	if err != nil {
		return
	}
	dev, _ := peer.Decode(device)
	for _, h := range holders {
		if h != s.cfg.Host.ID() {
			if err := Del(ctx, s.cfg.Host, h, dev, ids); err != nil {
				s.log.Debug("tell holder", "holder", h, "err", err)
			}
		}
	}
}

// maintain drops what expired and replicates to the current holders.
func (s *Server) maintain() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ReplicateInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now().UnixMilli()
		s.db.Exec(`DELETE FROM items WHERE expires_ms <= ?`, now)
		s.db.Exec(`DELETE FROM tombstones WHERE until_ms <= ?`, now)
		if err := s.replicate(); err != nil && s.ctx.Err() == nil {
			s.log.Debug("replicate", "err", err)
		}
	}
}

// replicate makes sure that every current holder of an account's mail has
// every envelope this supernode keeps for it: when a holder leaves, the next
// closest supernode becomes a holder and gets a copy.
func (s *Server) replicate() error {
	rows, err := s.db.Query(`SELECT DISTINCT account FROM items`)
	if err != nil {
		return err
	}
	var accounts [][]byte
	for rows.Next() {
		var a []byte
		rows.Scan(&a)
		accounts = append(accounts, a)
	}
	rows.Close()
	for _, acct := range accounts {
		ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
		holders, err := s.cfg.Closest(ctx, Key(acct), s.cfg.K)
		if err != nil {
			cancel()
			continue
		}
		items, err := s.itemsOf(acct)
		if err != nil {
			cancel()
			return err
		}
		for _, h := range holders {
			if h == s.cfg.Host.ID() {
				continue
			}
			s.pushMissing(ctx, h, items)
		}
		cancel()
	}
	return nil
}

func (s *Server) itemsOf(account []byte) ([]Item, error) {
	rows, err := s.db.Query(`SELECT id, to_device, account, from_device, env, expires_ms FROM items WHERE account=? ORDER BY stored_ms, id`, account)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Item
	for rows.Next() {
		var it Item
		if err := rows.Scan(&it.ID, &it.To, &it.Account, &it.From, &it.Env, &it.ExpiresMS); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

func (s *Server) pushMissing(ctx context.Context, holder peer.ID, items []Item) {
	s.mu.Lock()
	known := s.confirmed[holder]
	if known == nil {
		known = map[string]bool{}
		s.confirmed[holder] = known
	}
	var missing []Item
	for _, it := range items {
		if !known[it.ID+"/"+it.To] {
			missing = append(missing, it)
		}
	}
	s.mu.Unlock()
	for len(missing) > 0 {
		batch := missing[:min(len(missing), MaxItemsPerPut)]
		missing = missing[len(batch):]
		res, err := Put(ctx, s.cfg.Host, holder, batch, true)
		if err != nil {
			s.log.Debug("replicate to holder", "holder", holder, "err", err)
			return
		}
		s.mu.Lock()
		for i, r := range res {
			if r.Err == "" && i < len(batch) {
				known[batch[i].ID+"/"+batch[i].To] = true
			}
		}
		s.mu.Unlock()
	}
}

func shortID(s string) string {
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}
