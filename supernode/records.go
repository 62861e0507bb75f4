package supernode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
	record "github.com/libp2p/go-libp2p-record"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"google.golang.org/protobuf/proto"
)

// RecordDir is the directory under a supernode's home that holds the DHT's
// records (handle records, and provider records should parley ever use
// them) in a pebble database.
const RecordDir = "dht"

// recordSweepInterval is how often records past their validity are removed
// from disk (kad-dht only drops one when it is read).
const recordSweepInterval = time.Hour

// ErrRecordStore is returned when the DHT's record store cannot be opened or
// written: a full or read-only disk. A supernode refuses to start rather
// than keep records in memory only and lose them at the next restart.
var ErrRecordStore = errors.New("DHT record store unusable")

// recordStore is the DHT's datastore: pebble with every write synced to
// disk before the DHT acknowledges a PUT_VALUE, so a SIGKILL loses nothing a
// publisher was told was stored. Provider records go through kad-dht's
// provider manager, which batches up to 256 writes in memory; parley
// publishes none.
type recordStore struct {
	*pebbleds.Datastore
	log *slog.Logger
}

// openRecordStore opens (or creates) home/dht and proves it writable with a
// synced probe write.
func openRecordStore(home string, log *slog.Logger) (*recordStore, error) {
	dir := filepath.Join(home, RecordDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRecordStore, dir, err)
	}
	d, err := pebbleds.NewDatastore(dir,
		pebbleds.WithPebbleWriteOptions(pebble.Sync),
		pebbleds.WithPebbleOpts(&pebble.Options{Logger: pebbleLogger{log}}))
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrRecordStore, dir, err)
	}
	probe := ds.NewKey("/parley-probe")
	ctx := context.Background()
	if err := d.Put(ctx, probe, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		_ = d.Close() // the probe failed: its error says why
		return nil, fmt.Errorf("%w: write to %s (is the disk full or read-only?): %v", ErrRecordStore, dir, err)
	}
	if err := d.Delete(ctx, probe); err != nil {
		_ = d.Close() // the probe failed: its error says why
		return nil, fmt.Errorf("%w: write to %s (is the disk full or read-only?): %v", ErrRecordStore, dir, err)
	}
	return &recordStore{Datastore: d, log: log}, nil
}

// Put stores a record; a failure is logged loudly as well as returned to
// kad-dht (which then fails the publisher's PUT_VALUE), so no loss is silent.
func (r *recordStore) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := r.Datastore.Put(ctx, key, value); err != nil {
		r.log.Error("DHT record not stored", "key", key.String(), "err", err)
		return fmt.Errorf("%w: %v", ErrRecordStore, err)
	}
	return nil
}

// sweep deletes value records received longer than maxAge ago or that no
// longer validate (an expired handle record), and returns how many it kept
// and dropped. Provider records (under /providers) have their own GC.
func (r *recordStore) sweep(ctx context.Context, v record.Validator, maxAge time.Duration, now time.Time) (kept, dropped int, err error) {
	res, err := r.Query(ctx, query.Query{})
	if err != nil {
		return 0, 0, err
	}
	defer res.Close()
	var stale []ds.Key
	for e := range res.Next() {
		if e.Error != nil {
			return kept, dropped, e.Error
		}
		if strings.HasPrefix(e.Key, "/providers/") {
			continue
		}
		rec := new(recpb.Record)
		bad := proto.Unmarshal(e.Value, rec) != nil
		if !bad {
			t, perr := time.Parse(time.RFC3339Nano, rec.GetTimeReceived())
			bad = perr != nil || now.Sub(t) > maxAge || v.Validate(string(rec.GetKey()), rec.GetValue()) != nil
		}
		if bad {
			stale = append(stale, ds.NewKey(e.Key))
		} else {
			kept++
		}
	}
	for _, k := range stale {
		if err := r.Delete(ctx, k); err != nil {
			return kept, dropped, err
		}
		dropped++
	}
	return kept, dropped, nil
}

// pebbleLogger sends pebble's logs to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}

// count is how many value records are on disk.
func (r *recordStore) count(ctx context.Context) (int, error) {
	res, err := r.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	n := 0
	for e := range res.Next() {
		if e.Error != nil {
			return n, e.Error
		}
		if !strings.HasPrefix(e.Key, "/providers/") {
			n++
		}
	}
	return n, nil
}
