package scale

import (
	"context"
	"testing"
	"time"
)

// Envelopes deposited into a mailbox are all fetched, and a dead holder's
// share all reaches the supernode that takes its place.
func TestMailboxLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunMailbox(ctx, MailboxOptions{Envelopes: 64, Recipients: 8, Senders: 2, Duration: time.Minute, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deposited != 64 || res.Refused != 0 {
		t.Fatalf("deposited %d of 64, %d refused", res.Deposited, res.Refused)
	}
	if res.Fetched != 64 || res.FetchLost != 0 {
		t.Fatalf("fetched %d, %d missing", res.Fetched, res.FetchLost)
	}
	if res.Share != 64 || res.Replicated != 64 {
		t.Fatalf("re-replicated %d of a share of %d", res.Replicated, res.Share)
	}
	if res.BytesPerMsg <= 0 {
		t.Fatalf("disk per envelope %v", res.BytesPerMsg)
	}
}
