package discovery

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func cachedPeer(t *testing.T, port int) peer.AddrInfo {
	t.Helper()
	id, err := peer.IDFromPublicKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{
		ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)),
		ma.StringCast("/p2p/" + id.String() + "/p2p-circuit"), // never cached
	}}
}

func TestHostCache(t *testing.T) {
	for _, c := range []struct {
		name     string
		max, add int
		want     int
	}{
		{"under the bound", 4, 3, 3},
		{"at the bound", 4, 4, 4},
		{"least recently seen dropped", 4, 10, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			home := t.TempDir()
			hc, err := LoadHostCache(home, c.max)
			if err != nil {
				t.Fatal(err)
			}
			var peers []peer.AddrInfo
			t0 := time.Unix(1_800_000_000, 0)
			for i := 0; i < c.add; i++ {
				p := cachedPeer(t, 4000+i)
				peers = append(peers, p)
				hc.Seen(p, t0.Add(time.Duration(i)*time.Minute))
			}
			if err := hc.Save(); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(home, HostCacheFile))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("cache file %v, %v; want mode 0600", fi, err)
			}
			again, err := LoadHostCache(home, c.max)
			if err != nil {
				t.Fatal(err)
			}
			got := again.Peers()
			if len(got) != c.want {
				t.Fatalf("%d peers after reload, want %d", len(got), c.want)
			}
			// Most recently seen first; the newest are the ones kept.
			for i, p := range got {
				want := peers[c.add-1-i]
				if p.ID != want.ID || len(p.Addrs) != 1 {
					t.Fatalf("entry %d is %v, want %v without its circuit address", i, p, want.ID)
				}
			}
		})
	}
}

func TestHostCacheCorrupt(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, HostCacheFile), []byte("{not json"), 0o600)
	hc, err := LoadHostCache(home, 0)
	if !errors.Is(err, ErrHostCache) || hc == nil || len(hc.Peers()) != 0 {
		t.Fatalf("corrupt cache: %v, %v; want an empty cache and ErrHostCache", hc, err)
	}
	hc.Seen(cachedPeer(t, 4100), time.Now())
	if err := hc.Save(); err != nil {
		t.Fatal(err)
	}
	if again, err := LoadHostCache(home, 0); err != nil || len(again.Peers()) != 1 {
		t.Fatalf("after rewrite: %v, %v", again, err)
	}
}

func mustKey(t *testing.T) crypto.PubKey {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
