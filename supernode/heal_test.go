package supernode

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/mailbox"
	"github.com/parley-net/parley/supernode/mailboxserver"
)

// member is one supernode of a test network, at a fixed address so it can
// come back where the others look for it.
type member struct {
	home, listen string
	site         string
	sn           *Supernode
	id           peer.ID
}

// siteNet is a network of supernodes spread over sites: site s is
// 127.0.<10+s>.0/24 (all of 127/8 is loopback on Linux).
type siteNet struct {
	t       *testing.T
	members []*member
	repl    time.Duration
}

func newSiteNet(t *testing.T, sites, perSite int, repl time.Duration) *siteNet {
	n := &siteNet{t: t, repl: repl}
	for s := 0; s < sites; s++ {
		for i := 0; i < perSite; i++ {
			ip := fmt.Sprintf("127.0.%d.%d", 10+s, 1+i)
			if l, err := net.Listen("tcp", ip+":0"); err != nil {
				t.Skipf("cannot listen on %s (loopback beyond 127.0.0.1 is needed): %v", ip, err)
			} else {
				l.Close()
			}
			port := nodetest.FixedPort(t, ip)
			n.members = append(n.members, &member{home: t.TempDir(), listen: fmt.Sprintf("/ip4/%s/tcp/%d", ip, port),
				site: fmt.Sprintf("127.0.%d.0/24", 10+s)})
		}
	}
	for i := range n.members {
		n.start(i)
	}
	t.Cleanup(func() {
		for i := range n.members {
			n.kill(i)
		}
	})
	return n
}

func (n *siteNet) start(i int) {
	n.t.Helper()
	var boot []peer.AddrInfo
	for _, m := range n.members {
		if m.sn != nil {
			boot = append(boot, m.sn.AddrInfo())
		}
	}
	m := n.members[i]
	sn, err := newTestSupernode(Config{Home: m.home, Listen: []string{m.listen}, Bootstrap: boot,
		Mailbox: mailboxserver.Config{ReplicateInterval: n.repl}})
	if err != nil {
		n.t.Fatal(err)
	}
	m.sn, m.id = sn, sn.ID()
}

// kill stops a supernode abruptly: its connections drop, nothing is handed
// over.
func (n *siteNet) kill(i int) {
	if m := n.members[i]; m.sn != nil {
		m.sn.Close()
		m.sn = nil
	}
}

// wipe empties a stopped supernode's disk but its key.
func (n *siteNet) wipe(i int) {
	home := n.members[i].home
	ents, _ := os.ReadDir(home)
	for _, e := range ents {
		if e.Name() != "supernode.key" {
			os.RemoveAll(filepath.Join(home, e.Name()))
		}
	}
}

// expected are the members that should hold the mail for key: the k
// closest live ones, one per site first.
func (n *siteNet) expected(key string, k int) []int {
	var live []peer.ID
	idx := map[peer.ID]int{}
	for i, m := range n.members {
		if m.sn != nil {
			live = append(live, m.id)
			idx[m.id] = i
		}
	}
	sorted := kb.SortClosestPeers(live, kb.ConvertKey(key))
	var out []int
	for _, p := range mailbox.PickHolders(sorted, k, func(p peer.ID) string { return n.members[idx[p]].site }) {
		out = append(out, idx[p])
	}
	return out
}

func (n *siteNet) holds(i, want int) bool {
	m := n.members[i]
	if m.sn == nil {
		return false
	}
	c, err := m.sn.Mailbox().Count()
	return err == nil && c == want
}

// TestMailboxesHealInWaves: mail for an offline device is left with k = 3
// supernodes in three different sites. Three times, two of the current
// holders are killed and the survivor restores three copies at the new
// closest supernodes. The six come back with wiped disks and, those among
// the closest again, get their share again. The device then fetches every
// message, once.
func TestMailboxesHealInWaves(t *testing.T) {
	const k, msgs = 3, 20
	// Four sites of three: after three waves of two, six are left.
	nw := newSiteNet(t, 4, 3, 200*time.Millisecond)
	sender, device := plainHost(t), plainHost(t)
	account := make([]byte, 32)
	rand.Read(account)
	key := mailbox.Key(account)
	ctx := context.Background()

	holders := nw.expected(key, k)
	sites := map[string]bool{}
	for _, i := range holders {
		sites[nw.members[i].site] = true
	}
	if len(sites) != k {
		t.Fatalf("holders %v are in %d sites, want %d", holders, len(sites), k)
	}
	var items []mailbox.Item
	for i := 0; i < msgs; i++ {
		items = append(items, mailbox.Item{ID: fmt.Sprintf("a%02d", i), To: device.ID().String(), Account: account, From: sender.ID().String(),
			ExpiresMS: time.Now().Add(time.Hour).UnixMilli(), Env: []byte("sealed")})
	}
	for _, i := range holders {
		ai := nw.members[i].sn.AddrInfo()
		if err := sender.Connect(ctx, ai); err != nil {
			t.Fatal(err)
		}
		for rest := items; len(rest) > 0; {
			batch := rest[:min(len(rest), mailbox.MaxItemsPerPut)]
			rest = rest[len(batch):]
			res, err := mailbox.Put(ctx, sender, ai.ID, batch)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Err != "" {
					t.Fatalf("put to %d: %s", i, r.Err)
				}
			}
		}
	}

	restored := func(what string) time.Duration {
		t.Helper()
		return nodetest.Eventually(t, 20*time.Second, what, func() bool {
			for _, i := range nw.expected(key, k) {
				if !nw.holds(i, msgs) {
					return false
				}
			}
			return true
		})
	}
	var killed []int
	for wave := 1; wave <= 3; wave++ {
		dead := nw.expected(key, k)[:2]
		for _, i := range dead {
			nw.kill(i)
		}
		killed = append(killed, dead...)
		took := restored(fmt.Sprintf("wave %d: k=3 restored", wave))
		t.Logf("wave %d: killed holders %v; k=%d restored at %v in %s", wave, dead, k, nw.expected(key, k), took.Round(time.Millisecond))
	}
	// Every supernode killed comes back with a wiped disk; those that are
	// among the closest again get their share again.
	back := time.Now()
	for _, i := range killed {
		nw.wipe(i)
		nw.start(i)
	}
	restored("wiped holders back")
	t.Logf("%v back with wiped disks; holders %v complete %s after the first restarted", killed, nw.expected(key, k), time.Since(back).Round(time.Millisecond))

	// The device fetches from one holder: everything, once.
	h := nw.members[nw.expected(key, k)[0]].sn
	if err := device.Connect(ctx, h.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	if _, err := mailbox.Fetch(ctx, device, h.ID(), device.ID(), func(it mailbox.Item) error {
		seen[it.ID]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if seen[it.ID] != 1 {
			t.Fatalf("message %s fetched %d times; all: %v", it.ID, seen[it.ID], seen)
		}
	}
}

func TestPickHolders(t *testing.T) {
	ids := make([]peer.ID, 6)
	for i := range ids {
		ids[i] = peer.ID(fmt.Sprintf("peer%d", i))
	}
	siteOf := func(m map[int]string) func(peer.ID) string {
		return func(p peer.ID) string {
			for i, id := range ids {
				if id == p {
					return m[i]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		name  string
		sites map[int]string
		k     int
		want  []int
	}{
		{"all distinct", map[int]string{0: "a", 1: "b", 2: "c", 3: "d"}, 3, []int{0, 1, 2}},
		{"closest two share a site", map[int]string{0: "a", 1: "a", 2: "b", 3: "c"}, 3, []int{0, 2, 3}},
		{"fewer sites than k", map[int]string{0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: "b"}, 3, []int{0, 1, 3}},
		{"unknown sites are their own", map[int]string{0: "a", 1: "a"}, 3, []int{0, 2, 3}},
		{"fewer candidates than k", map[int]string{}, 8, []int{0, 1, 2, 3, 4, 5}},
	} {
		got := mailbox.PickHolders(ids, c.k, siteOf(c.sites))
		var want []peer.ID
		for _, i := range c.want {
			want = append(want, ids[i])
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: picked %v, want %v", c.name, got, want)
		}
	}
}

func TestSite(t *testing.T) {
	for _, c := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"/ip4/127.0.10.1/tcp/1"}, "127.0.10.0/24"},
		{[]string{"/ip4/127.0.0.1/tcp/1", "/ip4/192.168.1.7/tcp/1", "/ip4/1.2.3.4/tcp/1"}, "1.2.3.0/24"},
		{[]string{"/ip4/127.0.0.1/tcp/1", "/ip4/10.1.2.3/udp/1/quic-v1"}, "10.1.2.0/24"},
		{[]string{"/ip6/2001:db8:1:2::5/tcp/1"}, "2001:db8:1::/48"},
		{[]string{"/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo/p2p-circuit"}, ""},
	} {
		var as []ma.Multiaddr
		for _, s := range c.addrs {
			as = append(as, ma.StringCast(s))
		}
		if got := mailbox.Site(as); got != c.want {
			t.Errorf("Site(%v) = %q, want %q", c.addrs, got, c.want)
		}
	}
}
