package scale

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/mailbox"
	"github.com/parley-net/parley/supernode/mailboxserver"
)

// MailboxOptions configure RunMailbox. Zero values mean the defaults named.
type MailboxOptions struct {
	// Envelopes the mailbox holds at the end of the deposits; 0 means a
	// million. All but Deposits of them are loaded first, in large
	// transactions through the server's own store code (Server.Load).
	Envelopes int
	// Deposits are the envelopes deposited over the real protocol (libp2p
	// on 127.0.0.1, 16 a put) once the mailbox holds the rest, and timed;
	// 0 means 20,000.
	Deposits int
	// Duration caps the measured deposits and, separately, the
	// re-replication phase; 0 means 4 minutes each.
	Duration time.Duration
	// Size of each envelope in bytes; 0 means 512 (a chat message sealed).
	Size int
	// Recipients the envelopes are spread over; 0 means 1,000.
	Recipients int
	// Senders depositing at once, each its own libp2p host; 0 means 16.
	Senders int
	// Dir holds the mailboxes' databases; "" means a temporary directory.
	Dir string
	// Progress receives a line every 10 s; nil is silent.
	Progress io.Writer
}

// MailboxResult is what RunMailbox measured.
type MailboxResult struct {
	Preloaded   int     `json:"preloaded"`
	PreloadS    float64 `json:"preload_s"`
	Deposited   int     `json:"deposited"`
	DepositS    float64 `json:"deposit_s"`
	PerSecond   float64 `json:"deposits_per_s"`
	Refused     int     `json:"refused"`
	Held        int     `json:"held"`
	Size        int     `json:"envelope_bytes"`
	PutMS       Summary `json:"put_of_16_ms"`
	LastPutMS   Summary `json:"put_of_16_ms_last_10pct"`
	FirstPutMS  Summary `json:"put_of_16_ms_first_10pct"`
	FetchMS     Summary `json:"fetch_ms"`
	Fetched     int     `json:"fetched"`
	FetchLost   int     `json:"fetch_missing"`
	DiskBytes   int64   `json:"disk_bytes"`
	BytesPerMsg float64 `json:"disk_bytes_per_envelope"`
	Share       int     `json:"replicated_share"`
	Replicated  int     `json:"replicated"`
	ReplicateS  float64 `json:"replicate_s"`
	ReplicaPerS float64 `json:"replicated_per_s"`
	// MillionS is how long re-replicating a share of a million envelopes
	// takes at ReplicaPerS: 1,000,000 / ReplicaPerS.
	MillionS float64 `json:"replicate_million_s"`
	Load     string  `json:"load_average"`
}

// mbNode is one mailbox server on its own libp2p host.
type mbNode struct {
	h       host.Host
	s       *mailboxserver.Server
	closest atomic.Pointer[[]peer.ID]
}

// mbRecipients are the devices envelopes go to: the sampled hosts (which
// fetch) first, the rest IDs only.
type mbRecipients struct {
	hosts    []host.Host
	to       []string
	accounts [][]byte
	want     map[string]int // envelopes stored for each sampled host, and only those
}

// RunMailbox fills one supernode mailbox (the real mailbox.Server on SQLite
// on disk, reached over libp2p on 127.0.0.1) to o.Envelopes: all but
// o.Deposits loaded in large transactions through the server's store code,
// the rest deposited by o.Senders devices over the protocol, each put of
// 16 timed, with the quotas raised out of the way; measures the disk; has a
// second holder die, so that the first must hand its whole store to a third
// supernode, timed (for at most o.Duration); and has a sample of recipients
// fetch their mail, checking none is lost.
func RunMailbox(ctx context.Context, o MailboxOptions) (*MailboxResult, error) {
	if o.Envelopes < 0 || o.Deposits < 0 || o.Duration < 0 || o.Size < 0 || o.Recipients < 0 || o.Senders < 0 {
		return nil, errors.New("scale mailbox: counts and durations must not be negative")
	}
	o.Envelopes = or(o.Envelopes, 1_000_000)
	o.Deposits = min(or(o.Deposits, 20_000), o.Envelopes)
	o.Duration = time.Duration(or(int(o.Duration), int(4*time.Minute)))
	o.Size = or(o.Size, 512)
	o.Recipients = or(o.Recipients, 1000)
	o.Senders = or(o.Senders, 16)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "parley-scale-mailbox-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	}
	nodes, err := startMailboxes(o.Dir)
	for _, n := range nodes {
		defer n.h.Close()
		if n.s != nil {
			defer n.s.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	a, c := nodes[0], nodes[2]
	res := &MailboxResult{Size: o.Size}
	rc, err := newRecipients(o.Recipients, min(o.Recipients, 50))
	if err != nil {
		return nil, err
	}
	defer closeHosts(rc.hosts)
	env := make([]byte, o.Size)
	rand.Read(env)
	if err := preloadPhase(ctx, o, a, rc, env, res); err != nil {
		return res, err
	}
	if err := depositPhase(ctx, o, a, rc, env, res); err != nil {
		return res, err
	}
	res.Held, _ = a.s.Count()
	res.DiskBytes = dirBytes(filepath.Join(o.Dir, "holder0"))
	if res.Held > 0 {
		res.BytesPerMsg = float64(res.DiskBytes) / float64(res.Held)
	}
	replicatePhase(ctx, o, a, c, res)
	fetchPhase(ctx, a, rc, res)
	res.Load = loadAverage()
	return res, ctx.Err()
}

// startMailboxes starts three mailbox servers, each alone among its
// holders until told otherwise; the nodes started so far are returned with
// an error too, to be closed.
func startMailboxes(dir string) ([]*mbNode, error) {
	var nodes []*mbNode
	ids := map[peer.ID]bool{}
	for i := 0; i < 3; i++ {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, &mbNode{h: h})
		ids[h.ID()] = true
	}
	for i, n := range nodes {
		alone := []peer.ID{n.h.ID()}
		n.closest.Store(&alone)
		home := filepath.Join(dir, fmt.Sprint("holder", i))
		if err := os.MkdirAll(home, 0o700); err != nil {
			return nodes, err
		}
		s, err := mailboxserver.NewServer(mailboxserver.Config{
			Home: home, Host: n.h, K: 2, ReplicateInterval: time.Second,
			Closest:     func(context.Context, string, int) ([]peer.ID, error) { return *n.closest.Load(), nil },
			IsSupernode: func(p peer.ID) bool { return ids[p] },
			// Capacity, not quotas, is measured: every quota out of the way.
			MaxPerSender: 1 << 30, MaxPerRecipientSrc: mailbox.MaxPerRecipient,
			MaxBytes: 1 << 40, MaxBytesPerIP: 1 << 40, MaxBytesPerPrefix: 1 << 40, MaxBytesPerRecipientSrc: 1 << 40,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			return nodes, err
		}
		n.s = s
	}
	return nodes, nil
}

// newRecipients makes n recipient devices, of which the first sampled are
// hosts that can fetch.
func newRecipients(n, sampled int) (*mbRecipients, error) {
	hs, err := newHosts(sampled)
	if err != nil {
		return nil, err
	}
	rc := &mbRecipients{hosts: hs, to: make([]string, n), accounts: make([][]byte, n), want: map[string]int{}}
	for i := range rc.to {
		if i < len(hs) {
			rc.to[i] = hs[i].ID().String()
			rc.want[rc.to[i]] = 0
		} else if rc.to[i], err = randomPeer(); err != nil {
			closeHosts(hs)
			return nil, err
		}
		rc.accounts[i] = make([]byte, 32)
		rand.Read(rc.accounts[i])
	}
	return rc, nil
}

// count notes one more envelope stored for to, if it is sampled.
func (rc *mbRecipients) count(to string) {
	if _, ok := rc.want[to]; ok {
		rc.want[to]++
	}
}

func randomPeer() (string, error) {
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPublicKey(pub)
	return id.String(), err
}

// envelope j of the run: to recipient j mod n, from sender from.
func (rc *mbRecipients) envelope(j int, from string, env []byte) mailbox.Item {
	r := j % len(rc.to)
	return mailbox.Item{ID: fmt.Sprintf("e%09d", j), To: rc.to[r], Account: rc.accounts[r],
		From: from, ExpiresMS: time.Now().Add(24 * time.Hour).UnixMilli(), Env: env}
}

// preloadBatch is how many envelopes one preload transaction stores.
const preloadBatch = 5000

// preloadPhase stores envelopes 0 to o.Envelopes-o.Deposits with
// Server.Load, preloadBatch a transaction, from 1,000 senders on 127.0.0.1
// (the address the measured deposits come from).
func preloadPhase(ctx context.Context, o MailboxOptions, a *mbNode, rc *mbRecipients, env []byte, res *MailboxResult) error {
	n := o.Envelopes - o.Deposits
	if n == 0 {
		return nil
	}
	senders := make([]string, 1000)
	for i := range senders {
		var err error
		if senders[i], err = randomPeer(); err != nil {
			return err
		}
	}
	start := time.Now()
	next := start.Add(10 * time.Second)
	for first := 0; first < n && ctx.Err() == nil; first += preloadBatch {
		items := make([]mailbox.Item, 0, preloadBatch)
		for j := first; j < min(first+preloadBatch, n); j++ {
			items = append(items, rc.envelope(j, senders[j%len(senders)], env))
		}
		for i, err := range a.s.Load("127.0.0.1", items) {
			if err != nil {
				res.Refused++
				continue
			}
			res.Preloaded++
			rc.count(items[i].To)
		}
		if time.Now().After(next) {
			next = next.Add(10 * time.Second)
			fmt.Fprintf(o.Progress, "scale mailbox: %d of %d preloaded, %.0f s, load %s\n", res.Preloaded, n, time.Since(start).Seconds(), loadAverage())
		}
	}
	res.PreloadS = time.Since(start).Seconds()
	return ctx.Err()
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func newHosts(n int) ([]host.Host, error) {
	var hs []host.Host
	for i := 0; i < n; i++ {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
		if err != nil {
			closeHosts(hs)
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func closeHosts(hs []host.Host) {
	for _, h := range hs {
		h.Close()
	}
}

// depositPhase puts the last o.Deposits envelopes into a over the
// protocol, 16 a put, from o.Senders senders at once, timing each put.
func depositPhase(ctx context.Context, o MailboxOptions, a *mbNode, rc *mbRecipients, env []byte, res *MailboxResult) error {
	senders, err := newHosts(o.Senders)
	if err != nil {
		return err
	}
	defer closeHosts(senders)
	target := peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()}
	for _, s := range senders {
		if err := s.Connect(ctx, target); err != nil {
			return err
		}
	}
	next := atomic.Int64{}
	next.Store(int64(o.Envelopes - o.Deposits))
	var mu sync.Mutex
	var puts []float64
	deadline := time.Now().Add(o.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	stopTick := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopTick:
				return
			case <-tick.C:
				mu.Lock()
				fmt.Fprintf(o.Progress, "scale mailbox: %d deposited, %.0f s, last put of 16 %.0f ms, load %s\n", res.Deposited, time.Since(start).Seconds(), last(puts), loadAverage())
				mu.Unlock()
			}
		}
	}()
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				first := int(next.Add(mailbox.MaxItemsPerPut)) - mailbox.MaxItemsPerPut
				if first >= o.Envelopes {
					return
				}
				var items []mailbox.Item
				for j := first; j < min(first+mailbox.MaxItemsPerPut, o.Envelopes); j++ {
					items = append(items, rc.envelope(j, s.ID().String(), env))
				}
				t0 := time.Now()
				rs, err := mailbox.Put(ctx, s, a.h.ID(), items)
				took := ms(time.Since(t0))
				mu.Lock()
				puts = append(puts, took)
				for i, r := range rs {
					if r.Err != "" {
						res.Refused++
						continue
					}
					res.Deposited++
					if i < len(items) {
						rc.count(items[i].To)
					}
				}
				if err != nil {
					res.Refused += len(items)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stopTick)
	res.DepositS = time.Since(start).Seconds()
	res.PerSecond = float64(res.Deposited) / res.DepositS
	res.PutMS = Dist(puts).Summarise()
	tenth := max(1, len(puts)/10)
	res.FirstPutMS = Dist(puts[:min(tenth, len(puts))]).Summarise()
	res.LastPutMS = Dist(puts[max(0, len(puts)-tenth):]).Summarise()
	return nil
}

// fetchPhase has each sampled recipient fetch (and acknowledge) its mail,
// as many fetches as it takes (one hands over at most 1,000), each timed,
// and counts what is missing.
func fetchPhase(ctx context.Context, a *mbNode, rc *mbRecipients, res *MailboxResult) {
	var times Dist
	target := peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()}
	for _, r := range rc.hosts {
		want := rc.want[r.ID().String()]
		if err := r.Connect(ctx, target); err != nil {
			res.FetchLost += want
			continue
		}
		got := 0
		for ctx.Err() == nil {
			t0 := time.Now()
			n, err := mailbox.Fetch(ctx, r, a.h.ID(), r.ID(), func(mailbox.Item) error { return nil })
			if err != nil {
				break
			}
			times = append(times, ms(time.Since(t0)))
			got += n
			if n == 0 {
				break
			}
		}
		res.Fetched += got
		res.FetchLost += max(0, want-got)
	}
	res.FetchMS = times.Summarise()
}

// replicatePhase: a (holding everything) and a second holder that has just
// died; a's closest now names c, which must receive a's whole store.
func replicatePhase(ctx context.Context, o MailboxOptions, a, c *mbNode, res *MailboxResult) {
	n, err := a.s.Count()
	if err != nil || n == 0 {
		return
	}
	res.Share = n
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: c.h.ID(), Addrs: c.h.Addrs()}); err != nil {
		return
	}
	start := time.Now()
	holders := []peer.ID{a.h.ID(), c.h.ID()}
	a.closest.Store(&holders)
	deadline := start.Add(o.Duration)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		<-t.C
		got, _ := c.s.Count()
		res.Replicated = got
		if got >= n {
			break
		}
		if int(time.Since(start).Seconds())%10 == 0 {
			fmt.Fprintf(o.Progress, "scale mailbox: re-replicated %d of %d, %.0f s\n", got, n, time.Since(start).Seconds())
		}
	}
	res.ReplicateS = time.Since(start).Seconds()
	res.ReplicaPerS = float64(res.Replicated) / res.ReplicateS
	if res.ReplicaPerS > 0 {
		res.MillionS = 1e6 / res.ReplicaPerS
	}
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// WriteTable prints r for a person.
func (r *MailboxResult) WriteTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, `preloaded | in | deposited over libp2p | in | per s | put of 16 p50/p95 | first 10%% p50 | last 10%% p50 | held
%d | %.0f s | %d (%d refused) | %.0f s | %.0f | %s / %s | %s | %s | %d
fetch p50/p95 | fetched (missing) | disk per envelope (%d B each) | re-replicated | in | per s | a million at that rate
%s / %s | %d (%d) | %.0f B | %d of %d | %.0f s | %.0f | 1,000,000 / %.0f per s = %.0f s (%.1f min)
load average %s
`, r.Preloaded, r.PreloadS, r.Deposited, r.Refused, r.DepositS, r.PerSecond, fmtMS(r.PutMS.P50), fmtMS(r.PutMS.P95),
		fmtMS(r.FirstPutMS.P50), fmtMS(r.LastPutMS.P50), r.Held, r.Size,
		fmtMS(r.FetchMS.P50), fmtMS(r.FetchMS.P95), r.Fetched, r.FetchLost, r.BytesPerMsg, r.Replicated, r.Share, r.ReplicateS, r.ReplicaPerS,
		r.ReplicaPerS, r.MillionS, r.MillionS/60, r.Load)
	return err
}

func last(d []float64) float64 {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}
