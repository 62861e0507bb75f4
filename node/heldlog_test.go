package node

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/mailbox"
)

// Forged envelopes left in a device's mailbox are held there until they
// expire and handed over again at every fetch; a line per envelope per fetch
// let one attacker with a thousand of them write thousands of warnings every
// 30 s on the victim (seen by hand against a clean clone: 1000 forged
// envelopes at three holders, 3128 lines in one fetch round). They are
// rate-limited like every other warning about bad input.
func TestHeldMailLogsRateLimited(t *testing.T) {
	sn := startSupernode(t)
	bobHome := initHome(t, "bob")
	bob := startNode(t, bobHome, sn)
	bobID, bobAcct := bob.Identity(), bob.Identity().AccountPub
	bob.Close()
	alice := startNode(t, initHome(t, "alice"), sn)
	mallory := newAttacker(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := mallory.h.Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	const forged = 64
	for i := 0; i < forged; i += mailbox.MaxItemsPerPut {
		var items []mailbox.Item
		for j := 0; j < mailbox.MaxItemsPerPut; j++ {
			id, env := mallory.forge(t, bobID, "FORGED")
			items = append(items, mailbox.Item{ID: id, To: bobID.PeerID.String(), Account: bobAcct,
				From: mallory.h.ID().String(), ExpiresMS: time.Now().Add(time.Hour).UnixMilli(), Env: env})
		}
		if res, err := mailbox.Put(ctx, mallory.h, sn.ID(), items, false); err != nil || res[0].Err != "" {
			t.Fatalf("mallory's deposit: %+v, %v", res, err)
		}
	}
	if _, err := alice.Send(ctx, "bob", "the real alice, after the forgeries"); err != nil {
		t.Fatal(err)
	}

	logs := &tap{}
	n, err := Start(ctx, Config{Home: bobHome, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: []peer.AddrInfo{sn.AddrInfo()},
		Logger: slog.New(slog.NewTextHandler(logs, nil)), RetryInterval: 100 * time.Millisecond, FetchInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitBody(t, n, DMConv("alice", "bob"), "the real alice, after the forgeries", 30*time.Second)
	logs.mu.Lock()
	lines := bytes.Count(logs.b.Bytes(), []byte(`msg="mailbox envelope held"`))
	logs.mu.Unlock()
	if lines > 5 {
		t.Fatalf("%d forged envelopes in the mailbox wrote %d 'mailbox envelope held' lines before the real mail came; want at most 5 and a count", forged, lines)
	}
}
