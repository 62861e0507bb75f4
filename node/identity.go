package node

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/keyfile"
)

// Files of a node's home directory.
const (
	deviceKeyFile  = "device.key"    // libp2p Ed25519 key: the peer ID
	boxKeyFile     = "box.key"       // X25519 key for end-to-end encryption
	accountKeyFile = "account.key"   // Ed25519 account key (on the primary device)
	identityFile   = "identity.json" // handle, devices, latest signed record
)

// RecordLifetime is how long a freshly signed handle record stays valid.
const RecordLifetime = 7 * 24 * time.Hour

// ErrNoIdentity is returned when a home holds no identity yet.
var ErrNoIdentity = errors.New("no identity")

// Identity is a device's keys and its account's handle record.
type Identity struct {
	Home       string
	DeviceKey  crypto.PrivKey
	PeerID     peer.ID
	BoxKey     *ecdh.PrivateKey
	Account    ed25519.PrivateKey // nil on a device that does not hold the account key
	AccountPub ed25519.PublicKey

	mu    sync.Mutex // guards state
	state identityState
}

type identityState struct {
	Handle     string             `json:"handle"`
	DeviceName string             `json:"device_name"`
	Devices    []discovery.Device `json:"devices"`
	Claimed    int64              `json:"claimed"`
	Seq        uint64             `json:"seq"`
	Record     []byte             `json:"record"`
	// Witnesses are supernodes' first-seen times of the account's claim of
	// the handle: kept here, and in every record signed, so the claim
	// outlives every supernode's memory of it.
	Witnesses []discovery.Witness `json:"witnesses,omitempty"`
}

// Handle is the account's handle.
func (id *Identity) Handle() string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.state.Handle
}

// DeviceName is this device's label.
func (id *Identity) DeviceName() string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.state.DeviceName
}

// Record is the latest signed handle record.
func (id *Identity) Record() []byte {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.state.Record
}

// Seq is the sequence number of the latest record.
func (id *Identity) Seq() uint64 {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.state.Seq
}

// Fingerprint is the account's safety number.
func (id *Identity) Fingerprint() string { return discovery.Fingerprint(id.AccountPub) }

// Self is this device's entry in the handle record.
func (id *Identity) Self() discovery.Device {
	return discovery.Device{PeerID: id.PeerID.String(), BoxKey: id.BoxKey.PublicKey().Bytes(), Name: id.state.DeviceName}
}

// InitIdentity creates a device key, a box key and an account key under home
// and signs the first handle record. It refuses a home that has an identity.
func InitIdentity(home, handle, deviceName string, now time.Time) (*Identity, error) {
	if err := discovery.ValidHandle(handle); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(home, identityFile)); err == nil {
		return nil, fmt.Errorf("%s already holds an identity; use another --home", home)
	}
	if deviceName == "" {
		deviceName, _ = os.Hostname()
	}
	if len(deviceName) > 64 {
		deviceName = deviceName[:64]
	}
	_, acct, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := newDevice(home)
	if err != nil {
		return nil, err
	}
	if err := keyfile.WriteSecret(filepath.Join(home, accountKeyFile), acct); err != nil {
		return nil, err
	}
	id.Account = acct
	id.AccountPub = acct.Public().(ed25519.PublicKey)
	id.state = identityState{Handle: handle, DeviceName: deviceName, Claimed: now.UnixMilli()}
	id.state.Devices = []discovery.Device{id.Self()}
	if _, err := id.resign(now); err != nil {
		return nil, err
	}
	return id, nil
}

func newDevice(home string) (*Identity, error) {
	dk, err := keyfile.LoadOrCreateEd25519(filepath.Join(home, deviceKeyFile))
	if err != nil {
		return nil, err
	}
	pid, err := peer.IDFromPrivateKey(dk)
	if err != nil {
		return nil, err
	}
	box, err := loadOrCreateBox(filepath.Join(home, boxKeyFile))
	if err != nil {
		return nil, err
	}
	return &Identity{Home: home, DeviceKey: dk, PeerID: pid, BoxKey: box}, nil
}

func loadOrCreateBox(path string) (*ecdh.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ecdh.X25519().NewPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return k, keyfile.WriteSecret(path, k.Bytes())
}

// LoadIdentity reads the identity under home.
func LoadIdentity(home string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(home, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s: run 'parley id init --handle NAME' first", ErrNoIdentity, home)
	}
	if err != nil {
		return nil, err
	}
	var st identityState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", identityFile, err)
	}
	id, err := newDevice(home)
	if err != nil {
		return nil, err
	}
	id.state = st
	rec, err := discovery.ParseHandleRecord(st.Record)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", identityFile, err)
	}
	id.AccountPub = ed25519.PublicKey(rec.Account)
	if ab, err := os.ReadFile(filepath.Join(home, accountKeyFile)); err == nil {
		if len(ab) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("read %s: bad key length", accountKeyFile)
		}
		id.Account = ed25519.PrivateKey(ab)
	}
	return id, nil
}

// Resign signs a new record with a higher sequence number and a fresh expiry.
// Only a device holding the account key can.
func (id *Identity) Resign(now time.Time) ([]byte, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.resign(now)
}

func (id *Identity) resign(now time.Time) ([]byte, error) {
	if id.Account == nil {
		return id.state.Record, nil
	}
	seq := uint64(now.UnixMilli())
	if seq <= id.state.Seq {
		seq = id.state.Seq + 1
	}
	r := &discovery.HandleRecord{
		V: 1, Handle: id.state.Handle, Devices: id.state.Devices, Seq: seq,
		Claimed: id.state.Claimed, Expires: now.Add(RecordLifetime).Unix(), Witnesses: id.state.Witnesses,
	}
	if err := r.Sign(id.Account); err != nil {
		return nil, err
	}
	b, err := r.Marshal()
	if err != nil {
		return nil, err
	}
	id.state.Seq, id.state.Record = seq, b
	return b, id.save()
}

// AddDevice adds a device to the account and signs the new device list.
func (id *Identity) AddDevice(d discovery.Device, now time.Time) ([]byte, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.Account == nil {
		return nil, errors.New("this device does not hold the account key; link from the primary device")
	}
	for _, have := range id.state.Devices {
		if have.PeerID == d.PeerID {
			return id.state.Record, nil
		}
	}
	if len(id.state.Devices) >= discovery.MaxDevices {
		return nil, fmt.Errorf("account already has %d devices", discovery.MaxDevices)
	}
	id.state.Devices = append(id.state.Devices, d)
	return id.resign(now)
}

// RemoveDevice takes a device off the account and signs the new list.
func (id *Identity) RemoveDevice(peerID string, now time.Time) ([]byte, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.Account == nil {
		return nil, errors.New("this device does not hold the account key")
	}
	kept := id.state.Devices[:0:0]
	for _, d := range id.state.Devices {
		if d.PeerID != peerID {
			kept = append(kept, d)
		}
	}
	if len(kept) == len(id.state.Devices) {
		return nil, fmt.Errorf("%s is not a device of %s", peerID, id.state.Handle)
	}
	id.state.Devices = kept
	return id.resign(now)
}

// AdoptRecord makes a record signed by this account the device's current
// one (a linked device learns its account's records this way).
func (id *Identity) AdoptRecord(b []byte) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	r, err := discovery.ParseHandleRecord(b)
	if err != nil {
		return err
	}
	if !r.HasDevice(id.PeerID) {
		return fmt.Errorf("record for %s does not list this device", r.Handle)
	}
	if id.AccountPub != nil && !id.AccountPub.Equal(ed25519.PublicKey(r.Account)) {
		return errors.New("record signed by another account")
	}
	if r.Seq < id.state.Seq {
		return nil
	}
	if id.AccountPub == nil {
		// Readers take AccountPub without the lock: it is set once.
		id.AccountPub = ed25519.PublicKey(r.Account)
	}
	id.state.Handle, id.state.Devices, id.state.Claimed = r.Handle, r.Devices, r.Claimed
	id.state.Seq, id.state.Record = r.Seq, b
	id.state.Witnesses, _ = discovery.MergeWitnesses(id.state.Witnesses, r.Witnesses, r.Handle, r.Account, nil)
	return id.save()
}

// Witnesses are the claim witnesses this device keeps.
func (id *Identity) Witnesses() []discovery.Witness {
	id.mu.Lock()
	defer id.mu.Unlock()
	return append([]discovery.Witness(nil), id.state.Witnesses...)
}

// AddWitnesses merges fresh claim witnesses into the kept ones (the earliest
// of each supernode stays; those of preferred supernodes first) and reports
// whether they changed. The next Resign carries them.
func (id *Identity) AddWitnesses(fresh []discovery.Witness, preferred []peer.ID) (bool, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	ws, changed := discovery.MergeWitnesses(id.state.Witnesses, fresh, id.state.Handle, id.AccountPub, preferred)
	if !changed {
		return false, nil
	}
	id.state.Witnesses = ws
	return true, id.save()
}

// JoinIdentity creates a device under home that belongs to an existing
// account: it gets keys now and its record once AdoptRecord is called.
func JoinIdentity(home, deviceName string) (*Identity, error) {
	if _, err := os.Stat(filepath.Join(home, identityFile)); err == nil {
		return nil, fmt.Errorf("%s already holds an identity; use another --home", home)
	}
	id, err := newDevice(home)
	if err != nil {
		return nil, err
	}
	id.state.DeviceName = deviceName
	return id, nil
}

func (id *Identity) save() error {
	b, err := json.MarshalIndent(id.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(id.Home, identityFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(id.Home, identityFile))
}
