package scale

import (
	"context"
	"testing"
	"time"
)

// Envelopes preloaded and deposited into a mailbox are all fetched (more
// than one fetch's worth for a recipient), and a dead holder's share all
// reaches the supernode that takes its place.
func TestMailboxLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunMailbox(ctx, MailboxOptions{Envelopes: 1200, Deposits: 64, Recipients: 1, Senders: 2, Duration: time.Minute, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Preloaded != 1200-64 || res.Deposited != 64 || res.Refused != 0 || res.Held != 1200 {
		t.Fatalf("preloaded %d, deposited %d of 64, %d refused, %d held", res.Preloaded, res.Deposited, res.Refused, res.Held)
	}
	if res.Fetched != 1200 || res.FetchLost != 0 {
		t.Fatalf("fetched %d, %d missing", res.Fetched, res.FetchLost)
	}
	if res.Share != 1200 || res.Replicated != 1200 {
		t.Fatalf("re-replicated %d of a share of %d", res.Replicated, res.Share)
	}
	if res.BytesPerMsg <= 0 {
		t.Fatalf("disk per envelope %v", res.BytesPerMsg)
	}
}
