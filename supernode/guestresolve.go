package supernode

import (
	"context"
	"errors"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/multiformats/go-base32"
	"google.golang.org/protobuf/proto"

	"github.com/parley-net/parley/discovery"
)

// resolveHandle is the handle's verified record for a guest's call: the
// lookup a node makes (discovery.LookupHandle asks the other servers, never
// this one) and the record this supernode holds itself, the better of the
// two by the DHT's own validator (so a supernode alone still serves its
// handles, and a rogue answer elsewhere does not beat a witnessed claim).
func (s *Supernode) resolveHandle(ctx context.Context, handle string) (*discovery.HandleRecord, error) {
	key := discovery.HandleKey(handle)
	var vals [][]byte
	if raw := s.localRecord(ctx, key); raw != nil {
		vals = append(vals, raw)
	}
	_, raw, lerr := discovery.Resolve(ctx, s.dht, handle)
	if lerr == nil {
		vals = append(vals, raw)
	}
	if len(vals) == 0 {
		if lerr == nil {
			lerr = errors.New("no record")
		}
		return nil, lerr
	}
	best := 0
	if len(vals) > 1 {
		i, err := s.dht.Validator.Select(key, vals)
		if err != nil {
			return nil, err
		}
		best = i
	}
	return discovery.ParseHandleRecord(vals[best])
}

// localRecord is the valid value this supernode stores for key, or nil.
func (s *Supernode) localRecord(ctx context.Context, key string) []byte {
	// kad-dht's own datastore key (mkDsKey in go-libp2p-kad-dht).
	b, err := s.records.Get(ctx, ds.NewKey(base32.RawStdEncoding.EncodeToString([]byte(key))))
	if err != nil {
		return nil
	}
	rec := new(recpb.Record)
	if proto.Unmarshal(b, rec) != nil || string(rec.GetKey()) != key {
		return nil
	}
	if err := s.dht.Validator.Validate(key, rec.GetValue()); err != nil {
		s.cfg.Logger.Debug("stored record no longer valid", "key", key, "err", fmt.Sprint(err))
		return nil
	}
	return rec.GetValue()
}
