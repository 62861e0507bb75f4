package mailboxserver

import (
	"database/sql"
	"fmt"
)

// Running totals. Every quota is a count or a byte sum over the stored
// envelopes (all of them, one source IP's, one source prefix's, one
// prefix's share of one device's mailbox); summing them per deposit is a
// scan that grows with the store. The totals table keeps each sum, and
// triggers on items keep it in the same transaction as the insert or delete
// that changes it, so it is exactly as durable as the envelopes themselves:
// a crash loses or keeps both. Items are never updated in place (only
// inserted and deleted); migrate's one UPDATE runs before the totals exist.
//
// Kinds and their keys:
//
//	all        ''                          every envelope
//	ip         source IP                   what one address left
//	prefix     source /24 or /48           what one prefix left
//	to-prefix  device, space, prefix       one prefix's share of one mailbox
//	account    account                     which accounts have mail (replication)
//	to         device                      one device's mailbox
//	from       sender device               what one sender left
const totalsSchema = `
CREATE TABLE totals(
	kind TEXT NOT NULL,
	key NOT NULL,
	n INTEGER NOT NULL,
	bytes INTEGER NOT NULL,
	PRIMARY KEY(kind, key)
) WITHOUT ROWID;
CREATE TRIGGER items_totals_insert AFTER INSERT ON items BEGIN
	INSERT INTO totals VALUES('all', '', 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
	INSERT INTO totals VALUES('ip', NEW.src_ip, 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
	INSERT INTO totals VALUES('prefix', NEW.src_prefix, 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
	INSERT INTO totals VALUES('to-prefix', NEW.to_device || ' ' || NEW.src_prefix, 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
	INSERT INTO totals VALUES('account', NEW.account, 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
	INSERT INTO totals VALUES('to', NEW.to_device, 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
	INSERT INTO totals VALUES('from', NEW.from_device, 1, NEW.size)
		ON CONFLICT(kind, key) DO UPDATE SET n=n+1, bytes=bytes+excluded.bytes;
END;
CREATE TRIGGER items_totals_delete AFTER DELETE ON items BEGIN
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='all' AND key='';
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='ip' AND key=OLD.src_ip;
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='prefix' AND key=OLD.src_prefix;
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='to-prefix' AND key=OLD.to_device || ' ' || OLD.src_prefix;
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='account' AND key=OLD.account;
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='to' AND key=OLD.to_device;
	UPDATE totals SET n=n-1, bytes=bytes-OLD.size WHERE kind='from' AND key=OLD.from_device;
	DELETE FROM totals WHERE n<=0 AND kind<>'all' AND (
		(kind='to' AND key=OLD.to_device) OR (kind='from' AND key=OLD.from_device) OR
		(kind='ip' AND key=OLD.src_ip) OR (kind='prefix' AND key=OLD.src_prefix) OR
		(kind='to-prefix' AND key=OLD.to_device || ' ' || OLD.src_prefix) OR (kind='account' AND key=OLD.account));
END;
`

// totalsFromItems computes every total from the envelopes themselves: how a
// database made before the totals gets them, and what a test compares the
// running totals with.
const totalsFromItems = `
SELECT 'all', '', COUNT(*), COALESCE(SUM(size), 0) FROM items
UNION ALL SELECT 'ip', src_ip, COUNT(*), SUM(size) FROM items GROUP BY src_ip
UNION ALL SELECT 'prefix', src_prefix, COUNT(*), SUM(size) FROM items GROUP BY src_prefix
UNION ALL SELECT 'to-prefix', to_device || ' ' || src_prefix, COUNT(*), SUM(size) FROM items GROUP BY to_device, src_prefix
UNION ALL SELECT 'account', account, COUNT(*), SUM(size) FROM items GROUP BY account
UNION ALL SELECT 'to', to_device, COUNT(*), SUM(size) FROM items GROUP BY to_device
UNION ALL SELECT 'from', from_device, COUNT(*), SUM(size) FROM items GROUP BY from_device`

// ensureTotals creates the totals, their triggers and their first values
// from the envelopes, in one transaction, unless they exist; drops the
// indexes the quota counts and sums needed before; and indexes what
// replication (account) and expiry (expires_ms) look envelopes up by: at a
// million envelopes, expiry's scan of the whole table held the database
// for tens of seconds every round, stalling deposits.
func ensureTotals(db *sql.DB) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var have int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='totals'`).Scan(&have); err != nil {
		return err
	}
	if have == 0 {
		if _, err := tx.Exec(totalsSchema); err != nil {
			return fmt.Errorf("create totals: %w", err)
		}
		if _, err := tx.Exec(`INSERT INTO totals ` + totalsFromItems); err != nil {
			return fmt.Errorf("fill totals: %w", err)
		}
	}
	if _, err := tx.Exec(`
DROP INDEX IF EXISTS items_src_ip;
DROP INDEX IF EXISTS items_src_prefix;
DROP INDEX IF EXISTS items_to_src;
DROP INDEX IF EXISTS items_from;
CREATE INDEX IF NOT EXISTS items_account ON items(account, stored_ms, id);
CREATE INDEX IF NOT EXISTS items_expires ON items(expires_ms);`); err != nil {
		return err
	}
	return tx.Commit()
}

// stmts are the statements storing an envelope runs, prepared once: a
// statement parsed per envelope cost a third of the store's CPU.
type stmts struct {
	tomb, have, total, quota, insert *sql.Stmt
}

func prepare(db *sql.DB) (*stmts, error) {
	var st stmts
	for _, p := range []struct {
		s **sql.Stmt
		q string
	}{
		{&st.tomb, `SELECT COUNT(*) FROM tombstones WHERE id=? AND to_device=?`},
		{&st.have, `SELECT COUNT(*) FROM items WHERE id=? AND to_device=?`},
		{&st.total, `SELECT n, bytes FROM totals WHERE kind=? AND key=?`},
		{&st.quota, `SELECT kind, n, bytes FROM totals WHERE (kind='all' AND key='') OR (kind='to' AND key=?1) OR
			(kind='from' AND key=?2) OR (kind='ip' AND key=?3) OR (kind='prefix' AND key=?4) OR (kind='to-prefix' AND key=?5)`},
		{&st.insert, `INSERT INTO items(id,to_device,account,from_device,env,expires_ms,stored_ms,size,src_ip,src_prefix) VALUES(?,?,?,?,?,?,?,?,?,?)`},
	} {
		var err error
		if *p.s, err = db.Prepare(p.q); err != nil {
			st.close()
			return nil, err
		}
	}
	return &st, nil
}

// in is the statements bound to the transaction tx.
func (st *stmts) in(tx *sql.Tx) *stmts {
	return &stmts{tomb: tx.Stmt(st.tomb), have: tx.Stmt(st.have), total: tx.Stmt(st.total), quota: tx.Stmt(st.quota), insert: tx.Stmt(st.insert)}
}

func (st *stmts) close() {
	for _, s := range []*sql.Stmt{st.tomb, st.have, st.total, st.quota, st.insert} {
		if s != nil {
			_ = s.Close() // a prepared statement: nothing is written
		}
	}
}

// total is one running total; a key with nothing stored is 0, 0.
func (st *stmts) get(kind string, key any) (n, bytes int64, err error) {
	err = st.total.QueryRow(kind, key).Scan(&n, &bytes)
	if err == sql.ErrNoRows {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("mailbox totals: %w", err)
	}
	return n, bytes, nil
}

// count is one total: envelopes and their bytes.
type count struct{ n, bytes int64 }

// quotaTotals reads every total a deposit's quotas look at, in one query;
// a total with nothing stored is absent from the map, and reads as zero.
func (st *stmts) quotaTotals(to, from, ip, prefix, toPrefix string) (map[string]count, error) {
	rows, err := st.quota.Query(to, from, ip, prefix, toPrefix)
	if err != nil {
		return nil, fmt.Errorf("mailbox totals: %w", err)
	}
	defer rows.Close()
	t := make(map[string]count, 6)
	for rows.Next() {
		var kind string
		var c count
		if err := rows.Scan(&kind, &c.n, &c.bytes); err != nil {
			return nil, fmt.Errorf("mailbox totals: %w", err)
		}
		t[kind] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mailbox totals: %w", err)
	}
	return t, nil
}
