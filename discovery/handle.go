package discovery

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/internal/wire"
)

// HandleNamespace is the DHT key namespace of handle records: /parley-handle/<handle>.
const HandleNamespace = "parley-handle"

// Limits of a handle record.
const (
	MaxRecordSize = 8 << 10             // bytes of an encoded record
	MaxDevices    = 16                  // devices of one account
	MaxRecordTTL  = 14 * 24 * time.Hour // how far in the future Expires may lie
	maxDeviceName = 64
)

// Errors of handle records and lookups.
var (
	ErrNoSuchHandle  = errors.New("no such handle")
	ErrBadHandle     = errors.New("invalid handle")
	ErrBadRecord     = errors.New("invalid handle record")
	ErrExpired       = errors.New("handle record expired")
	ErrHandleTaken   = errors.New("handle already claimed by another account")
	ErrBadSignature  = errors.New("bad handle record signature")
	recordSigContext = []byte("parley handle record v1\n")
)

var handleRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{1,31}$`)

// ValidHandle reports whether h is a well-formed handle: 2 to 32 characters of
// a-z, 0-9, '_', '.', '-', starting with a letter or digit.
func ValidHandle(h string) error {
	if !handleRE.MatchString(h) {
		return fmt.Errorf("%w %q: use 2-32 of a-z 0-9 _ . - starting with a letter or digit", ErrBadHandle, h)
	}
	return nil
}

// HandleKey is the DHT key of a handle's record.
func HandleKey(handle string) string { return "/" + HandleNamespace + "/" + handle }

// Device is one device of an account.
type Device struct {
	// PeerID is the device's libp2p peer ID (its Ed25519 key).
	PeerID string `json:"peer"`
	// BoxKey is the device's X25519 public key for end-to-end encryption.
	BoxKey []byte `json:"box"`
	// Name is a label the user chose ("laptop"); may be empty.
	Name string `json:"name,omitempty"`
}

// HandleRecord binds a handle to an account key and the account's devices.
// The account key signs everything but Sig.
type HandleRecord struct {
	V       int      `json:"v"`
	Handle  string   `json:"handle"`
	Account []byte   `json:"account"` // Ed25519 public key
	Devices []Device `json:"devices"`
	// Seq orders records of one account: a higher Seq replaces a lower one.
	Seq uint64 `json:"seq"`
	// Claimed is when the account says it first claimed the handle (Unix
	// milliseconds). The signer writes it itself, so it ranks nothing:
	// Witnesses do.
	Claimed int64 `json:"claimed"`
	// Expires is when the record stops being valid (Unix seconds).
	Expires int64 `json:"expires"`
	// Witnesses are supernodes' signed first-seen times of this account's
	// claim of the handle (see ClaimProtocol); at most MaxWitnesses. An
	// invalid witness is not an error: it just does not count.
	Witnesses []Witness `json:"witnesses,omitempty"`
	Sig       []byte    `json:"sig"`
}

func (r *HandleRecord) signedBytes() ([]byte, error) {
	c := *r
	c.Sig = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return append(append([]byte{}, recordSigContext...), b...), nil
}

// Sign fills Account and Sig with the account key.
func (r *HandleRecord) Sign(account ed25519.PrivateKey) error {
	r.Account = account.Public().(ed25519.PublicKey)
	msg, err := r.signedBytes()
	if err != nil {
		return err
	}
	r.Sig = ed25519.Sign(account, msg)
	return nil
}

// Marshal encodes a signed record.
func (r *HandleRecord) Marshal() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrBadRecord, len(b), MaxRecordSize)
	}
	return b, nil
}

// HasDevice reports whether id is one of the record's devices.
func (r *HandleRecord) HasDevice(id peer.ID) bool {
	return r.Device(id) != nil
}

// Device returns the entry of device id, or nil.
func (r *HandleRecord) Device(id peer.ID) *Device {
	s := id.String()
	for i := range r.Devices {
		if r.Devices[i].PeerID == s {
			return &r.Devices[i]
		}
	}
	return nil
}

// DeviceIDs returns the peer IDs of the record's devices.
func (r *HandleRecord) DeviceIDs() []peer.ID {
	out := make([]peer.ID, 0, len(r.Devices))
	for _, d := range r.Devices {
		if id, err := peer.Decode(d.PeerID); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// Fingerprint is the account's safety number.
func (r *HandleRecord) Fingerprint() string { return Fingerprint(r.Account) }

// ParseHandleRecord decodes b and checks its structure and signature. It does
// not check expiry: see CheckFresh.
func ParseHandleRecord(b []byte) (*HandleRecord, error) {
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrBadRecord, len(b), MaxRecordSize)
	}
	var r HandleRecord
	if err := wire.DecodeJSON(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if r.V != 1 {
		return nil, fmt.Errorf("%w: version %d", ErrBadRecord, r.V)
	}
	if err := ValidHandle(r.Handle); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if len(r.Account) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: account key of %d bytes", ErrBadRecord, len(r.Account))
	}
	if len(r.Devices) == 0 || len(r.Devices) > MaxDevices {
		return nil, fmt.Errorf("%w: %d devices (1 to %d allowed)", ErrBadRecord, len(r.Devices), MaxDevices)
	}
	seen := map[string]bool{}
	for _, d := range r.Devices {
		if _, err := peer.Decode(d.PeerID); err != nil {
			return nil, fmt.Errorf("%w: device %q: %v", ErrBadRecord, d.PeerID, err)
		}
		if seen[d.PeerID] {
			return nil, fmt.Errorf("%w: device %s listed twice", ErrBadRecord, d.PeerID)
		}
		seen[d.PeerID] = true
		if len(d.BoxKey) != 32 {
			return nil, fmt.Errorf("%w: device %s box key of %d bytes", ErrBadRecord, d.PeerID, len(d.BoxKey))
		}
		if len(d.Name) > maxDeviceName {
			return nil, fmt.Errorf("%w: device name too long", ErrBadRecord)
		}
	}
	if len(r.Witnesses) > MaxWitnesses {
		return nil, fmt.Errorf("%w: %d witnesses (limit %d)", ErrBadRecord, len(r.Witnesses), MaxWitnesses)
	}
	if r.Claimed <= 0 || r.Expires*1000 <= r.Claimed {
		return nil, fmt.Errorf("%w: claimed %d, expires %d", ErrBadRecord, r.Claimed, r.Expires)
	}
	msg, err := r.signedBytes()
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(ed25519.PublicKey(r.Account), msg, r.Sig) {
		return nil, ErrBadSignature
	}
	return &r, nil
}

// CheckFresh reports whether r is valid at now: not expired, and not
// claiming a lifetime longer than MaxRecordTTL.
func (r *HandleRecord) CheckFresh(now time.Time) error {
	if now.Unix() >= r.Expires {
		return fmt.Errorf("%w at %s", ErrExpired, time.Unix(r.Expires, 0).UTC().Format(time.RFC3339))
	}
	if time.Unix(r.Expires, 0).Sub(now) > MaxRecordTTL {
		return fmt.Errorf("%w: expires too far in the future", ErrBadRecord)
	}
	return nil
}

// Fingerprint renders an account key as a safety number a person can read
// aloud and compare: 30 digits in groups of five.
func Fingerprint(account []byte) string {
	sum := sha256.Sum256(append([]byte("parley fingerprint v1\n"), account...))
	n := new(big.Int).SetBytes(sum[:])
	digits := fmt.Sprintf("%030s", n.String())
	digits = digits[len(digits)-30:]
	groups := make([]string, 0, 6)
	for i := 0; i < 30; i += 5 {
		groups = append(groups, digits[i:i+5])
	}
	return strings.Join(groups, " ")
}

// HandleValidator validates and orders handle records for the DHT.
//
// Between records of one account the higher Seq wins. Between rival accounts
// the better ClaimRank wins: the claim a quorum of trusted supernodes saw
// first (see ClaimProtocol). A self-written time counts for nothing, and a
// witness of a supernode outside Trusted counts for nothing, so neither a
// record's signer nor a rogue DHT server can back-date a claim. On equal
// ranks a DHT server (PreferExisting) keeps the claim it already holds: the
// DHT's PUT handler calls Select with {incoming, stored}, so index 1 is the
// stored one; a client breaks the tie by account key.
type HandleValidator struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PreferExisting is set on DHT servers; see the type comment.
	PreferExisting bool
	// Trusted are the supernodes whose witnesses count; nil means none
	// count, and every rival claim ranks equal.
	Trusted []peer.ID
	// Quorum is how many distinct trusted witnesses make a claim attested;
	// 0 means DefaultQuorum. It is capped at len(Trusted), so a node that
	// knows one supernode takes that one's word.
	Quorum int
}

func (v HandleValidator) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}

// Rank is how r's claim ranks against rivals, counting only valid witnesses
// of distinct trusted supernodes.
func (v HandleValidator) Rank(r *HandleRecord) ClaimRank {
	trusted := make(map[peer.ID]bool, len(v.Trusted))
	for _, p := range v.Trusted {
		trusted[p] = true
	}
	q := v.Quorum
	if q <= 0 {
		q = DefaultQuorum
	}
	q = min(q, len(trusted))
	seen := map[peer.ID]int64{}
	for i := range r.Witnesses {
		id, err := r.Witnesses[i].Verify(r.Handle, r.Account)
		if err != nil || !trusted[id] {
			continue
		}
		if t, ok := seen[id]; !ok || r.Witnesses[i].Seen < t {
			seen[id] = r.Witnesses[i].Seen
		}
	}
	times := make([]int64, 0, len(seen))
	for _, t := range seen {
		times = append(times, t)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	rank := ClaimRank{Witnesses: len(times)}
	if len(times) > 0 {
		rank.First = times[0]
	}
	if q > 0 && len(times) >= q {
		rank.Attested, rank.At = true, times[q-1]
	}
	return rank
}

func handleFromKey(key string) (string, error) {
	prefix := "/" + HandleNamespace + "/"
	if !strings.HasPrefix(key, prefix) {
		return "", fmt.Errorf("%w: key %q not in namespace %s", ErrBadRecord, key, HandleNamespace)
	}
	h := strings.TrimPrefix(key, prefix)
	return h, ValidHandle(h)
}

// Validate implements record.Validator.
func (v HandleValidator) Validate(key string, value []byte) error {
	h, err := handleFromKey(key)
	if err != nil {
		return err
	}
	r, err := ParseHandleRecord(value)
	if err != nil {
		return err
	}
	if r.Handle != h {
		return fmt.Errorf("%w: record for %q stored under %q", ErrBadRecord, r.Handle, h)
	}
	return r.CheckFresh(v.now())
}

// Select implements record.Validator.
func (v HandleValidator) Select(key string, values [][]byte) (int, error) {
	if len(values) == 0 {
		return 0, errors.New("select among no handle records")
	}
	best, bestIdx := (*HandleRecord)(nil), -1
	for i, b := range values {
		r, err := ParseHandleRecord(b)
		if err != nil {
			continue
		}
		if best == nil || v.better(r, i, best, bestIdx, values) {
			best, bestIdx = r, i
		}
	}
	if bestIdx < 0 {
		return 0, fmt.Errorf("%w: none of %d records valid", ErrBadRecord, len(values))
	}
	return bestIdx, nil
}

// better reports whether a (at index ai) should replace b (at index bi).
func (v HandleValidator) better(a *HandleRecord, ai int, b *HandleRecord, bi int, values [][]byte) bool {
	if bytes.Equal(a.Account, b.Account) {
		if a.Seq != b.Seq {
			return a.Seq > b.Seq
		}
		// The same record again (a republish): prefer the incoming copy so the
		// server refreshes its stored time.
		return bytes.Equal(values[ai], values[bi]) && ai < bi
	}
	if c := v.Rank(a).Compare(v.Rank(b)); c != 0 {
		return c < 0
	}
	if v.PreferExisting {
		return ai > bi
	}
	return bytes.Compare(a.Account, b.Account) < 0
}
