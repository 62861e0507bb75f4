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
	// Envelopes to deposit at most; 0 means a million.
	Envelopes int
	// Duration caps the deposit phase and, separately, the re-replication
	// phase; 0 means 4 minutes each.
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
	Deposited   int     `json:"deposited"`
	DepositS    float64 `json:"deposit_s"`
	PerSecond   float64 `json:"deposits_per_s"`
	Refused     int     `json:"refused"`
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
	Load        string  `json:"load_average"`
}

// mbNode is one mailbox server on its own libp2p host.
type mbNode struct {
	h       host.Host
	s       *mailboxserver.Server
	closest atomic.Pointer[[]peer.ID]
}

// RunMailbox deposits envelopes into one supernode mailbox (the real
// mailbox.Server on SQLite on disk, reached over libp2p on 127.0.0.1) from
// o.Senders devices for o.Duration or until o.Envelopes, with the quotas
// raised out of the way, measuring each put of 16; fetches a sample of
// recipients' mail (checking none is lost) after the re-replication: a
// second holder's death hands the first holder's whole store to a third
// supernode, timed; and measures the disk.
func RunMailbox(ctx context.Context, o MailboxOptions) (*MailboxResult, error) {
	if o.Envelopes < 0 || o.Duration < 0 || o.Size < 0 || o.Recipients < 0 || o.Senders < 0 {
		return nil, errors.New("scale mailbox: counts and durations must not be negative")
	}
	o.Envelopes = or(o.Envelopes, 1_000_000)
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
	nodes := make([]*mbNode, 3)
	ids := map[peer.ID]bool{}
	for i := range nodes {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
		if err != nil {
			return nil, err
		}
		defer h.Close()
		nodes[i] = &mbNode{h: h}
		ids[h.ID()] = true
	}
	for i, n := range nodes {
		alone := []peer.ID{n.h.ID()}
		n.closest.Store(&alone)
		home := filepath.Join(o.Dir, fmt.Sprint("holder", i))
		if err := os.MkdirAll(home, 0o700); err != nil {
			return nil, err
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
			return nil, err
		}
		defer s.Close()
		n.s = s
	}
	a, c := nodes[0], nodes[2]
	res := &MailboxResult{Size: o.Size}
	recips, err := newHosts(min(o.Recipients, 50))
	if err != nil {
		return nil, err
	}
	defer closeHosts(recips)
	want, err := depositPhase(ctx, o, a, recips, res)
	if err != nil {
		return res, err
	}
	res.DiskBytes = dirBytes(filepath.Join(o.Dir, "holder0"))
	if res.Deposited > 0 {
		res.BytesPerMsg = float64(res.DiskBytes) / float64(res.Deposited)
	}
	replicatePhase(ctx, o, a, c, res)
	fetchPhase(ctx, a, recips, want, res)
	res.Load = loadAverage()
	return res, ctx.Err()
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

// depositPhase puts envelopes into a, 16 a put, from o.Senders senders at
// once, and returns how many each sampled recipient should find.
func depositPhase(ctx context.Context, o MailboxOptions, a *mbNode, recips []host.Host, res *MailboxResult) (map[peer.ID]int, error) {
	senders, err := newHosts(o.Senders)
	if err != nil {
		return nil, err
	}
	defer closeHosts(senders)
	target := peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()}
	for _, s := range senders {
		if err := s.Connect(ctx, target); err != nil {
			return nil, err
		}
	}
	// Recipients: the sampled hosts first, the rest IDs only.
	to := make([]peer.ID, o.Recipients)
	accounts := make([][]byte, o.Recipients)
	for i := range to {
		if i < len(recips) {
			to[i] = recips[i].ID()
		} else {
			_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
			if err != nil {
				return nil, err
			}
			if to[i], err = peer.IDFromPublicKey(pub); err != nil {
				return nil, err
			}
		}
		accounts[i] = make([]byte, 32)
		rand.Read(accounts[i])
	}
	env := make([]byte, o.Size)
	rand.Read(env)
	var next atomic.Int64
	var mu sync.Mutex
	var puts []float64
	want := map[peer.ID]int{}
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
				first := next.Add(mailbox.MaxItemsPerPut) - mailbox.MaxItemsPerPut
				if first >= int64(o.Envelopes) {
					return
				}
				var items []mailbox.Item
				for j := first; j < min(first+mailbox.MaxItemsPerPut, int64(o.Envelopes)); j++ {
					r := int(j) % o.Recipients
					items = append(items, mailbox.Item{ID: fmt.Sprintf("e%09d", j), To: to[r].String(), Account: accounts[r],
						From: s.ID().String(), ExpiresMS: time.Now().Add(24 * time.Hour).UnixMilli(), Env: env})
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
						id, _ := peer.Decode(items[i].To)
						want[id]++
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
	return want, nil
}

func last(d []float64) float64 {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}

// fetchPhase has each sampled recipient fetch (and acknowledge) its mail,
// and counts what is missing.
func fetchPhase(ctx context.Context, a *mbNode, recips []host.Host, want map[peer.ID]int, res *MailboxResult) {
	var times Dist
	target := peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()}
	for _, r := range recips {
		if err := r.Connect(ctx, target); err != nil {
			res.FetchLost += want[r.ID()]
			continue
		}
		t0 := time.Now()
		n, err := mailbox.Fetch(ctx, r, a.h.ID(), r.ID(), func(mailbox.Item) error { return nil })
		if err == nil {
			times = append(times, ms(time.Since(t0)))
		}
		res.Fetched += n
		res.FetchLost += max(0, want[r.ID()]-n)
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
	_, err := fmt.Fprintf(w, `deposited | in | per s | put of 16 p50/p95 | first 10%% p50 | last 10%% p50 | fetch p50/p95 | fetched (missing) | disk per envelope (%d B each) | re-replicated | in | per s
%d (%d refused) | %.0f s | %.0f | %s / %s | %s | %s | %s / %s | %d (%d) | %.0f B | %d of %d | %.0f s | %.0f
load average %s
`, r.Size, r.Deposited, r.Refused, r.DepositS, r.PerSecond, fmtMS(r.PutMS.P50), fmtMS(r.PutMS.P95), fmtMS(r.FirstPutMS.P50), fmtMS(r.LastPutMS.P50),
		fmtMS(r.FetchMS.P50), fmtMS(r.FetchMS.P95), r.Fetched, r.FetchLost, r.BytesPerMsg, r.Replicated, r.Share, r.ReplicateS, r.ReplicaPerS, r.Load)
	return err
}
