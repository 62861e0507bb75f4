package lab

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/supernode"
)

const (
	demoSupernodes     = 4
	demoOfflineMessage = 20
)

// OfflineReport sums up the demo's offline part.
type OfflineReport struct {
	Sent                     int     `json:"sent"`
	Delivered                int     `json:"delivered"`
	Lost                     int     `json:"lost"`
	Duplicates               int     `json:"duplicates"`
	MailboxesKilled          int     `json:"mailboxes_killed"`
	DeliveryAfterReconnectMS float64 `json:"delivery_after_reconnect_ms"`
	HistoriesIdentical       bool    `json:"histories_identical"`
}

// demoOffline: bob's phone goes offline; alice sends 20 messages, which
// wait in the mailboxes of the three supernodes closest to bob's account;
// two of those are stopped; the phone comes back and gets everything from
// what is left, in order, once.
// Long because it is one act of the demo's script, told in the order it
// happens, with a check after each step.
func demoOffline(ctx context.Context, out io.Writer, sns []*supernode.Supernode, alice, laptop, phone *node.Node, restart func() (*node.Node, error), rep *OfflineReport) error {
	fmt.Fprintf(out, "\nbob's phone goes offline; alice sends %d messages\n", demoOfflineMessage)
	phone.Close()
	var sent []string
	for i := 0; i < demoOfflineMessage; i++ {
		res, err := alice.Send(ctx, "bob", fmt.Sprintf("while you were away (%d)", i+1))
		if err != nil {
			return fmt.Errorf("alice sends: %w", err)
		}
		sent = append(sent, res.Message.ID)
		rep.Sent++
	}
	var holders []int
	for i, s := range sns {
		if c, _ := s.Mailbox().Count(); c > 0 {
			holders = append(holders, i)
		}
	}
	fmt.Fprintf(out, "  the laptop has them; the phone's copies wait at supernodes %v\n", holders)
	if len(holders) < 3 {
		return fmt.Errorf("only %d supernodes hold the phone's mail", len(holders))
	}
	for _, i := range holders[:2] {
		sns[i].Close()
		sns[i] = nil
		rep.MailboxesKilled++
	}
	fmt.Fprintf(out, "  supernodes %v stop\n", holders[:2])

	start := time.Now()
	p, err := restart()
	if err != nil {
		return err
	}
	ev, stop := p.Subscribe()
	defer stop()
	// The phone's store is the measure: a message counts once it is there.
	// Events only wake the loop (and would show a duplicate).
	seen := map[string]int{}
	have := map[string]bool{}
	var lastIn int64 // when the last of them was committed on the phone
	timeout := time.After(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		h, err := p.Store().History(ctx, node.DMConv("alice", "bob"), 0)
		if err != nil {
			return err
		}
		for _, m := range h {
			have[m.ID] = true
		}
		lastIn = 0
		for _, m := range h {
			if slices.Contains(sent, m.ID) && m.ReceivedMS > lastIn {
				lastIn = m.ReceivedMS
			}
		}
		done := true
		for _, id := range sent {
			done = done && have[id]
		}
		if done {
			break
		}
		select {
		case e, ok := <-ev:
			if !ok {
				return fmt.Errorf("phone stopped")
			}
			if e.Type == "message" {
				seen[e.Message.ID]++
			}
		case <-tick.C:
		case <-timeout:
			waiting = false
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Measured to the moment the last message was committed on the phone (the
	// phone's own clock, this process's), not to when this loop noticed.
	rep.DeliveryAfterReconnectMS = round(float64(lastIn - start.UnixMilli()))
	for _, id := range sent {
		if !have[id] {
			rep.Lost++
			continue
		}
		rep.Delivered++
		if seen[id] > 1 {
			rep.Duplicates += seen[id] - 1
		}
	}
	fmt.Fprintf(out, "  the phone is back: %d of %d delivered %.0f ms after reconnecting, %d lost, %d duplicates\n",
		rep.Delivered, rep.Sent, rep.DeliveryAfterReconnectMS, rep.Lost, rep.Duplicates)

	// One history on every device: same messages, same order.
	var hs [][]node.Message
	for _, n := range []*node.Node{alice, laptop, p} {
		with := "bob"
		if n != alice {
			with = "alice"
		}
		h, err := n.History(ctx, with, 0)
		if err != nil {
			return err
		}
		hs = append(hs, h)
	}
	rep.HistoriesIdentical = sameHistory(hs[0], hs[1]) && sameHistory(hs[0], hs[2])
	fmt.Fprintf(out, "  alice, bob's laptop and bob's phone each show %d, %d and %d messages; identical: %v\n",
		len(hs[0]), len(hs[1]), len(hs[2]), rep.HistoriesIdentical)
	return nil
}

func sameHistory(a, b []node.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}
