package supernode

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/internal/wire"
)

// Limits of the claim witness service.
const (
	// MaxClaims is how many (handle, account) first-seen times a supernode
	// keeps; beyond it a new claim is refused (a known claim is still
	// witnessed).
	MaxClaims  = 1 << 20
	claimsFile = "claims.jsonl"
)

// ErrClaimsFull is returned when the claim table holds MaxClaims entries.
var ErrClaimsFull = errors.New("claim table full")

// claimEntry is one line of the claims file.
type claimEntry struct {
	Handle  string `json:"h"`
	Account []byte `json:"a"`
	Seen    int64  `json:"t"`
}

// ClaimServer answers discovery.ClaimProtocol: it witnesses the first time
// it saw each (handle, account) claim, signed with the supernode's key. The
// times are appended to claims.jsonl in the supernode's home and read back
// at start, so a restart never moves a first-seen time later; a supernode
// that lost its home starts afresh, and devices keep the witnesses it
// signed before (they carry them in their records).
type ClaimServer struct {
	key crypto.PrivKey
	now func() time.Time
	log *slog.Logger

	mu    sync.Mutex // guards seen and file
	seen  map[string]int64
	file  *os.File
	limit int
}

func claimKey(handle string, account []byte) string { return handle + "\x00" + string(account) }

// newClaimServer loads the claims file at path (creating it) and serves
// ClaimProtocol on h.
func newClaimServer(h host.Host, key crypto.PrivKey, path string, now func() time.Time, log *slog.Logger) (*ClaimServer, error) {
	if now == nil {
		now = time.Now
	}
	c := &ClaimServer{key: key, now: now, log: log, seen: map[string]int64{}, limit: MaxClaims}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e claimEntry
			if json.Unmarshal(sc.Bytes(), &e) != nil || e.Seen <= 0 {
				continue // a torn last line after a crash
			}
			k := claimKey(e.Handle, e.Account)
			if t, ok := c.seen[k]; !ok || e.Seen < t {
				c.seen[k] = e.Seen
			}
		}
		// A log read only in part would forget claims, and a rival claim
		// could then pass for the first: refuse to start instead.
		err := sc.Err()
		_ = f.Close() // read-only: nothing to lose
		if err != nil {
			return nil, fmt.Errorf("read claims %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read claims %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open claims %s: %w", path, err)
	}
	c.file = f
	h.SetStreamHandler(discovery.ClaimProtocol, c.handle)
	return c, nil
}

// Witness returns the signed first-seen time of (handle, account), noting
// now as that time when the claim is new.
func (c *ClaimServer) Witness(handle string, account []byte) (*discovery.Witness, error) {
	k := claimKey(handle, account)
	c.mu.Lock()
	t, ok := c.seen[k]
	if !ok {
		if len(c.seen) >= c.limit {
			c.mu.Unlock()
			return nil, ErrClaimsFull
		}
		t = c.now().UnixMilli()
		b, _ := json.Marshal(claimEntry{Handle: handle, Account: account, Seen: t})
		if _, err := c.file.Write(append(b, '\n')); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("record claim of %s: %w", handle, err)
		}
		if err := c.file.Sync(); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("record claim of %s: %w", handle, err)
		}
		c.seen[k] = t
	}
	c.mu.Unlock()
	return discovery.SignWitness(c.key, handle, account, t)
}

func (c *ClaimServer) handle(s network.Stream) {
	s.SetDeadline(time.Now().Add(discovery.ClaimTimeout))
	var req discovery.ClaimRequest
	if err := wire.ReadJSON(s, &req, discovery.MaxClaimFrame); err != nil || req.Check() != nil {
		s.Reset()
		return
	}
	w, err := c.Witness(req.Handle, req.Account)
	if err != nil {
		c.log.Warn("claim not witnessed", "handle", req.Handle, "err", err)
		s.Reset()
		return
	}
	if err := wire.WriteJSON(s, w, discovery.MaxClaimFrame); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// Close closes the claims file.
func (c *ClaimServer) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.file.Close()
}
