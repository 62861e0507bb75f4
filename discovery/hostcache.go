package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// HostCacheFile is the host cache's file name in a home directory.
const HostCacheFile = "hosts.json"

// DefaultHostCacheSize is how many peers a host cache keeps: the most
// recently seen win.
const DefaultHostCacheSize = 64

// lastSeenResolution is how stale a last-seen time may get before seeing
// the peer again is written down.
const lastSeenResolution = 5 * time.Minute

// maxHostCacheBytes bounds what LoadHostCache reads.
const maxHostCacheBytes = 1 << 20

// ErrHostCache is returned when the host cache cannot be read or written.
var ErrHostCache = errors.New("host cache")

// HostCache remembers, as Skype's host cache did, the supernodes and public
// peers a device or supernode has met, with when it last saw each, so a
// restart can join the network through them when every --bootstrap address
// is gone. It is a small JSON file (at most Max entries, least recently seen
// dropped first), written atomically (temporary file, fsync, rename) with
// mode 0600. Safe for concurrent use.
type HostCache struct {
	path string
	max  int

	// mu guards entries and dirty.
	mu      sync.Mutex
	entries map[peer.ID]HostEntry
	dirty   bool
}

// HostEntry is one remembered peer.
type HostEntry struct {
	ID       string    `json:"id"`
	Addrs    []string  `json:"addrs"`
	LastSeen time.Time `json:"last_seen"`
}

// LoadHostCache reads home/hosts.json; a missing file is an empty cache. A
// corrupt file also gives an empty cache (which the next Save replaces),
// together with an error wrapping ErrHostCache for the caller to log.
// max 0 means DefaultHostCacheSize.
func LoadHostCache(home string, max int) (*HostCache, error) {
	if max <= 0 {
		max = DefaultHostCacheSize
	}
	c := &HostCache{path: filepath.Join(home, HostCacheFile), max: max, entries: map[peer.ID]HostEntry{}}
	f, err := os.Open(c.path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrHostCache, err)
	}
	defer f.Close()
	var list []HostEntry
	b, err := io.ReadAll(io.LimitReader(f, maxHostCacheBytes+1))
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrHostCache, err)
	}
	if len(b) > maxHostCacheBytes {
		return c, fmt.Errorf("%w: %s is larger than %d bytes", ErrHostCache, c.path, maxHostCacheBytes)
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrHostCache, c.path, err)
	}
	for _, e := range list {
		if id, err := peer.Decode(e.ID); err == nil && len(e.Addrs) > 0 {
			c.entries[id] = e
		}
	}
	c.trim()
	return c, nil
}

// Seen records that ai was met at now. Circuit addresses are not kept: a
// host cache entry must be reachable on its own.
func (c *HostCache) Seen(ai peer.AddrInfo, now time.Time) {
	var addrs []string
	for _, a := range ai.Addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		addrs = append(addrs, a.String())
	}
	if len(addrs) == 0 {
		return
	}
	slices.Sort(addrs)
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.entries[ai.ID]
	// A peer seen again at the same addresses within lastSeenResolution
	// does not make the file dirty: the cache is rewritten when something
	// changed, not every time a connected supernode is counted.
	now = now.UTC().Truncate(time.Second)
	if ok && now.Sub(old.LastSeen) < lastSeenResolution && slices.Equal(old.Addrs, addrs) {
		return
	}
	c.entries[ai.ID] = HostEntry{ID: ai.ID.String(), Addrs: addrs, LastSeen: now}
	c.dirty = true
	c.trim()
}

// trim drops the least recently seen entries beyond max; c.mu held.
func (c *HostCache) trim() {
	for len(c.entries) > c.max {
		var oldest peer.ID
		var t time.Time
		for id, e := range c.entries {
			if oldest == "" || e.LastSeen.Before(t) {
				oldest, t = id, e.LastSeen
			}
		}
		delete(c.entries, oldest)
	}
}

// list is the entries, most recently seen first; c.mu held.
func (c *HostCache) list() []HostEntry {
	out := make([]HostEntry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b HostEntry) int {
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Peers are the remembered peers, most recently seen first.
func (c *HostCache) Peers() []peer.AddrInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []peer.AddrInfo
	for _, e := range c.list() {
		id, err := peer.Decode(e.ID)
		if err != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, s := range e.Addrs {
			if a, err := ma.NewMultiaddr(s); err == nil {
				ai.Addrs = append(ai.Addrs, a)
			}
		}
		if len(ai.Addrs) > 0 {
			out = append(out, ai)
		}
	}
	return out
}

// Entries are the remembered peers, most recently seen first.
func (c *HostCache) Entries() []HostEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.list()
}

// Save writes the cache if it changed since the last Save.
func (c *HostCache) Save() error {
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return nil
	}
	b, err := json.MarshalIndent(c.list(), "", " ")
	c.dirty = false
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.path, b); err != nil {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		return fmt.Errorf("%w: %v", ErrHostCache, err)
	}
	return nil
}

// writeFileAtomic replaces path with b: a reader sees the old file or the
// new one, never a part, even after a crash.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// MergePeers is a followed by the peers of b not already in a: the
// bootstrap list and the host cache as one list to dial.
func MergePeers(a, b []peer.AddrInfo) []peer.AddrInfo {
	seen := map[peer.ID]bool{}
	var out []peer.AddrInfo
	for _, list := range [][]peer.AddrInfo{a, b} {
		for _, ai := range list {
			if !seen[ai.ID] {
				seen[ai.ID] = true
				out = append(out, ai)
			}
		}
	}
	return out
}
