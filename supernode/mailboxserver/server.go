// Package mailboxserver is a supernode's side of the mailbox protocol
// (package mailbox describes the protocol and its limits): it keeps devices'
// envelopes in SQLite on disk, hands them over to their device, deletes them
// on the device's signed acknowledgement, enforces the quotas and copies
// every account's mail to the current k closest supernodes.
//
// It must never acknowledge an envelope it has not committed to disk, never
// give a device's envelopes to anyone but that device, and never delete mail
// without the recipient device's signature.
package mailboxserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/parley-net/parley/internal/homelock"
	"github.com/parley-net/parley/internal/lograte"
	"github.com/parley-net/parley/internal/wire"
	"github.com/parley-net/parley/mailbox"
)

// Defaults of Config.
const (
	DefaultReplicateInterval = 30 * time.Second
)

// replicaPutsInFlight bounds the replica puts a holder has in flight to one
// other holder.
const replicaPutsInFlight = 8

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
	// MaxPerRecipientSrc is how many envelopes one source prefix may leave
	// for one device; 0 means MaxPerRecipient/DefaultRecipientShare.
	MaxPerRecipientSrc int
	// MaxBytes caps all envelopes together; 0 means DefaultMaxBytes.
	MaxBytes int64
	// MaxBytesPerIP caps the envelopes from one source IP; 0 means
	// DefaultMaxBytesPerIP.
	MaxBytesPerIP int64
	// MaxBytesPerPrefix caps the envelopes from one /24 (IPv4) or /48 (IPv6);
	// 0 means DefaultMaxBytesPerPrefix.
	MaxBytesPerPrefix int64
	// MaxBytesPerRecipientSrc caps the envelopes one source prefix may leave
	// for one device; 0 means DefaultMaxBytesPerRecipientSrc.
	MaxBytesPerRecipientSrc int64
	// Registerer receives the mailbox's metrics (refusals by reason, bytes
	// stored); nil means none are exported.
	Registerer prometheus.Registerer
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
	st  *stmts // prepared on db
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	confirmed map[peer.ID]map[string]bool // holder -> item keys it is known to have
	notifee   *network.NotifyBundle
	tapMu     sync.Mutex

	metrics metrics
	warn    *lograte.Limiter // bad streams: a count per interval, not a line each
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
		cfg.K = mailbox.DefaultK
	}
	if cfg.TTL == 0 {
		cfg.TTL = mailbox.DefaultTTL
	}
	if cfg.ReplicateInterval == 0 {
		cfg.ReplicateInterval = DefaultReplicateInterval
	}
	if cfg.MaxPerRecipient == 0 {
		cfg.MaxPerRecipient = mailbox.MaxPerRecipient
	}
	if cfg.MaxPerSender == 0 {
		cfg.MaxPerSender = mailbox.MaxPerSender
	}
	if cfg.MaxPerRecipientSrc == 0 {
		cfg.MaxPerRecipientSrc = max(1, cfg.MaxPerRecipient/DefaultRecipientShare)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxBytesPerIP == 0 {
		cfg.MaxBytesPerIP = DefaultMaxBytesPerIP
	}
	if cfg.MaxBytesPerPrefix == 0 {
		cfg.MaxBytesPerPrefix = DefaultMaxBytesPerPrefix
	}
	if cfg.MaxBytesPerRecipientSrc == 0 {
		cfg.MaxBytesPerRecipientSrc = DefaultMaxBytesPerRecipientSrc
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	path := filepath.Join(cfg.Home, "mailbox.db")
	if err := homelock.PrivateFile(path); err != nil {
		return nil, fmt.Errorf("open mailbox: %w", err)
	}
	db, st, err := openDB(path)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: db, st: st, log: cfg.Logger, confirmed: map[peer.ID]map[string]bool{}}
	s.warn = lograte.New(cfg.Logger, lograte.Config{Now: cfg.Now})
	if err := s.registerMetrics(cfg.Registerer); err != nil {
		st.close()
		_ = db.Close() // opening failed: the error says why
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Host.SetStreamHandler(mailbox.Protocol, s.handle)
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

// openDB opens the mailbox database at path, brings its schema up to date
// (running totals included) and prepares the store's statements.
func openDB(path string) (*sql.DB, *stmts, error) {
	// temp_store(MEMORY): an insert that fires the totals' triggers keeps
	// a statement journal (to undo that one statement); in a temporary file
	// it was a quarter of the store's CPU in pwrite.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_pragma=temp_store(MEMORY)")
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		_ = db.Close() // opening failed: the error says why
		return nil, nil, fmt.Errorf("open mailbox %s: %w", path, err)
	}
	if err := migrate(db); err != nil {
		_ = db.Close() // opening failed: the error says why
		return nil, nil, fmt.Errorf("open mailbox %s: %w", path, err)
	}
	if err := ensureTotals(db); err != nil {
		_ = db.Close() // opening failed: the error says why
		return nil, nil, fmt.Errorf("open mailbox %s: %w", path, err)
	}
	st, err := prepare(db)
	if err != nil {
		_ = db.Close() // opening failed: the error says why
		return nil, nil, fmt.Errorf("open mailbox %s: %w", path, err)
	}
	return db, st, nil
}

// Close stops serving and closes the database.
func (s *Server) Close() error {
	s.cfg.Host.RemoveStreamHandler(mailbox.Protocol)
	s.cfg.Host.Network().StopNotify(s.notifee)
	s.cancel()
	s.wg.Wait()
	s.warn.Flush()
	s.st.close()
	return s.db.Close()
}

// Count is how many envelopes the mailbox holds.
func (s *Server) Count() (int, error) {
	n, _, err := s.st.get("all", "")
	return int(n), err
}

type tapReader struct {
	r io.Reader
	s *Server
}

func (t tapReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.s.tapMu.Lock()
		_, _ = t.s.cfg.Tap.Write(p[:n]) // a test's copy of the bytes; never the data path
		t.s.tapMu.Unlock()
	}
	return n, err
}

func (s *Server) handle(st network.Stream) {
	remote := st.Conn().RemotePeer()
	st.SetDeadline(s.cfg.Now().Add(mailbox.StreamTimeout))
	var r io.Reader = st
	if s.cfg.Tap != nil {
		r = tapReader{r: st, s: s}
	}
	f, err := mailbox.ReadFrame(r)
	if err == nil {
		switch f.Type {
		case "put":
			err = s.servePut(st, remote, f)
		case "fetch":
			err = s.serveFetch(st, r, remote, f)
		case "del":
			err = s.serveDel(f)
		default:
			err = fmt.Errorf("%w: %s is not a request", mailbox.ErrBadFrame, f.Type)
		}
	}
	if err != nil {
		s.warn.Info("mailbox stream reset", "peer", remote, "err", err)
		st.Reset()
		return
	}
	st.Close()
}

func (s *Server) servePut(st network.Stream, remote peer.ID, f *mailbox.Frame) error {
	if f.Replica && !s.cfg.IsSupernode(remote) {
		return fmt.Errorf("replica put from %s, not a supernode", remote.ShortString())
	}
	now := s.cfg.Now()
	ip := sourceIP(st.Conn())
	items := make([]mailbox.Item, len(f.Items))
	srcs := make([]string, len(f.Items))
	for i, it := range f.Items {
		// A replica is charged to the address its first holder took it
		// from, which only a supernode may name; anything else to the
		// address the stream comes from.
		srcs[i] = ip
		if !f.Replica || !validSrc(it.Src) {
			it.Src = ""
		} else {
			srcs[i] = it.Src
		}
		items[i] = it
	}
	sender := remote.String()
	if f.Replica {
		sender = ""
	}
	errs := s.storeBatch(now, sender, srcs, items, f.Replica)
	results := make([]mailbox.Result, 0, len(f.Items))
	for i, it := range items {
		res := mailbox.Result{ID: it.ID}
		if err := errs[i]; err != nil {
			res.Err = err.Error()
			if len(res.Err) > mailbox.MaxReason { // the client refuses a longer one
				res.Err = strings.ToValidUTF8(res.Err[:mailbox.MaxReason], "")
			}
			reason := "error"
			var qe *QuotaError
			if errors.As(err, &qe) {
				reason = qe.Reason
			}
			s.metrics.refused.WithLabelValues(reason).Inc()
		} else if f.Replica {
			s.metrics.stored.WithLabelValues("replica").Inc()
		} else {
			s.metrics.stored.WithLabelValues("deposit").Inc()
		}
		results = append(results, res)
	}
	return wire.WriteJSON(st, mailbox.Frame{Type: "put-ok", Results: results}, mailbox.MaxFrame)
}

// storeBatch commits items, item i coming from the address srcs[i], in one
// transaction (one sync to disk for the whole put), and says for each why it
// was not kept (nil: it is on disk). Every item gets every check the
// one-by-one path gave it, in order (a quota refuses that item alone; a
// failure of the store fails them all), so an earlier item of the batch counts
// against the quotas of the later ones. sender, unless "", is the peer
// putting them, which every item must name as its sender (a replica put
// passes ""). Nothing is reported kept before the commit: if the commit
// fails, every item fails with it.
func (s *Server) storeBatch(now time.Time, sender string, srcs []string, items []mailbox.Item, replica bool) []error {
	errs := make([]error, len(items))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	tx, err := s.db.Begin()
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	st := s.st.in(tx)
	for i, it := range items {
		errs[i] = s.store(st, now, sender, srcs[i], it, replica)
		var qe *QuotaError
		if errs[i] != nil && !errors.As(errs[i], &qe) {
			// The store itself failed: SQLite may have ended the
			// transaction, so nothing of it is trusted.
			return fail(errs[i])
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("mailbox: commit: %w", err))
	}
	return errs
}

// Load stores items as if each had been deposited by its own sender from
// the address src, through the same checks and quotas as a deposit, in one
// transaction; it says for each why it was not kept. It is how the scale
// lab fills a mailbox to a million envelopes in minutes: a put over the
// network is limited to mailbox.MaxItemsPerPut items.
func (s *Server) Load(src string, items []mailbox.Item) []error {
	srcs := make([]string, len(items))
	for i := range srcs {
		srcs[i] = src
	}
	return s.storeBatch(s.cfg.Now(), "", srcs, items, false)
}

// store adds one item coming from the address src to tx, or says why not.
// A failed insert leaves the transaction as it was (SQLite undoes the one
// statement, its triggers included).
func (s *Server) store(st *stmts, now time.Time, sender, src string, it mailbox.Item, replica bool) error {
	if sender != "" && it.From != sender {
		return refuse(ReasonNotSender, "sender %s is not the peer putting it", it.From)
	}
	if it.ExpiresMS <= now.UnixMilli() {
		return refuse(ReasonExpired, "already expired")
	}
	if max := now.Add(s.cfg.TTL).UnixMilli(); it.ExpiresMS > max {
		it.ExpiresMS = max
	}
	var dead, have int
	if err := st.tomb.QueryRow(it.ID, it.To).Scan(&dead); err != nil {
		return fmt.Errorf("mailbox: look up tombstone: %w", err)
	}
	if dead > 0 {
		return nil // delivered already: nothing to keep, nothing to retry
	}
	if err := st.have.QueryRow(it.ID, it.To).Scan(&have); err != nil {
		return fmt.Errorf("mailbox: look up envelope: %w", err)
	}
	if have > 0 {
		return nil
	}
	if err := s.checkQuota(st, it, src, replica); err != nil {
		return err
	}
	_, err := st.insert.Exec(
		it.ID, it.To, it.Account, it.From, it.Env, it.ExpiresMS, now.UnixMilli(), len(it.Env), src, sourcePrefix(src))
	return err
}

func (s *Server) serveFetch(st network.Stream, r io.Reader, remote peer.ID, f *mailbox.Frame) error {
	if f.Device != remote.String() {
		return fmt.Errorf("%s asked for the mail of %s", remote.ShortString(), shortID(f.Device))
	}
	rows, err := s.db.Query(`SELECT id, to_device, account, from_device, env, expires_ms FROM items WHERE to_device=? ORDER BY stored_ms, id LIMIT 1000`, f.Device)
	if err != nil {
		return err
	}
	var items []mailbox.Item
	for rows.Next() {
		var it mailbox.Item
		if err := rows.Scan(&it.ID, &it.To, &it.Account, &it.From, &it.Env, &it.ExpiresMS); err != nil {
			rows.Close()
			return err
		}
		items = append(items, it)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	for i := range items {
		if err := wire.WriteJSON(st, mailbox.Frame{Type: "item", Item: &items[i]}, mailbox.MaxFrame); err != nil {
			return err
		}
	}
	if err := wire.WriteJSON(st, mailbox.Frame{Type: "end"}, mailbox.MaxFrame); err != nil {
		return err
	}
	s.metrics.handed.Add(float64(len(items)))
	if len(items) == 0 {
		return nil
	}
	for {
		a, err := mailbox.ReadFrame(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if a.Type != "ack" {
			return fmt.Errorf("%w: expected ack, got %s", mailbox.ErrBadFrame, a.Type)
		}
		ack := mailbox.Ack{Device: f.Device, IDs: a.IDs, TS: a.TS, Sig: a.Sig}
		if err := s.removeAcked(ack); err != nil {
			return err
		}
		s.wg.Add(1)
		go s.tellHolders(ack, items)
	}
}

// serveDel takes a device's acknowledgement passed on by another holder.
// Who passes it on does not matter; the device's signature does.
func (s *Server) serveDel(f *mailbox.Frame) error {
	return s.removeAcked(mailbox.Ack{Device: f.Device, IDs: f.IDs, TS: f.TS, Sig: f.Sig})
}

// removeAcked deletes what the device acknowledged, once its signature
// holds.
func (s *Server) removeAcked(a mailbox.Ack) error {
	if err := mailbox.VerifyAck(a.Device, a.TS, a.IDs, a.Sig, s.cfg.Now(), s.cfg.TTL); err != nil {
		return err
	}
	return s.remove(a.Device, a.IDs)
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

// tellHolders passes a device's signed acknowledgement on to the other
// holders, unchanged.
func (s *Server) tellHolders(ack mailbox.Ack, items []mailbox.Item) {
	defer s.wg.Done()
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	holders, err := s.cfg.Closest(ctx, mailbox.Key(items[0].Account), s.cfg.K)
	if err != nil {
		return
	}
	for _, h := range holders {
		if h != s.cfg.Host.ID() {
			if err := mailbox.Del(ctx, s.cfg.Host, h, ack); err != nil {
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
		if _, err := s.db.Exec(`DELETE FROM items WHERE expires_ms <= ?`, now); err != nil {
			s.log.Warn("expire envelopes", "err", err) // tried again next round
		}
		if _, err := s.db.Exec(`DELETE FROM tombstones WHERE until_ms <= ?`, now); err != nil {
			s.log.Warn("expire tombstones", "err", err)
		}
		if err := s.replicate(); err != nil && s.ctx.Err() == nil {
			s.log.Debug("replicate", "err", err)
		}
	}
}

// replicate makes sure that every current holder of an account's mail has
// every envelope this supernode keeps for it: when a holder leaves, the next
// closest supernode becomes a holder and gets a copy.
func (s *Server) replicate() error {
	rows, err := s.db.Query(`SELECT key FROM totals WHERE kind='account'`)
	if err != nil {
		return err
	}
	var accounts [][]byte
	for rows.Next() {
		var a []byte
		if err := rows.Scan(&a); err != nil {
			rows.Close()
			return err
		}
		accounts = append(accounts, a)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	for _, acct := range accounts {
		ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
		holders, err := s.cfg.Closest(ctx, mailbox.Key(acct), s.cfg.K)
		if err != nil || !slices.ContainsFunc(holders, func(h peer.ID) bool { return h != s.cfg.Host.ID() }) {
			cancel() // no other holder to copy to: the mail is not read
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

func (s *Server) itemsOf(account []byte) ([]mailbox.Item, error) {
	rows, err := s.db.Query(`SELECT id, to_device, account, from_device, env, expires_ms, src_ip FROM items WHERE account=? ORDER BY stored_ms, id`, account)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []mailbox.Item
	for rows.Next() {
		var it mailbox.Item
		if err := rows.Scan(&it.ID, &it.To, &it.Account, &it.From, &it.Env, &it.ExpiresMS, &it.Src); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

func (s *Server) pushMissing(ctx context.Context, holder peer.ID, items []mailbox.Item) {
	s.mu.Lock()
	known := s.confirmed[holder]
	if known == nil {
		known = map[string]bool{}
		s.confirmed[holder] = known
	}
	var missing []mailbox.Item
	for _, it := range items {
		if !known[it.ID+"/"+it.To] {
			missing = append(missing, it)
		}
	}
	s.mu.Unlock()
	// Puts in flight at once: each is its own transaction (one sync) at
	// the holder, so one at a time left both ends idle for most of each
	// round trip.
	sem := make(chan struct{}, replicaPutsInFlight)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for len(missing) > 0 && !failed.Load() && ctx.Err() == nil {
		batch := missing[:min(len(missing), mailbox.MaxItemsPerPut)]
		missing = missing[len(batch):]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			res, err := mailbox.PutReplica(ctx, s.cfg.Host, holder, batch)
			if err != nil {
				if !failed.Swap(true) {
					s.log.Debug("replicate to holder", "holder", holder, "err", err)
				}
				return
			}
			s.mu.Lock()
			for i, r := range res {
				if r.Err == "" && i < len(batch) {
					known[batch[i].ID+"/"+batch[i].To] = true
				}
			}
			s.mu.Unlock()
		}()
	}
	wg.Wait()
}

func shortID(s string) string {
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}

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
