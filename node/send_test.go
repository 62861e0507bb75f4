package node

import (
	"context"
	"testing"
	"time"
)

// TestSendReturnsOnceQueued: a send to a device that just went offline
// returns once the message is in the outbox, without waiting out a dial, and
// the delivery attempt goes on to the device's mailboxes.
func TestSendReturnsOnceQueued(t *testing.T) {
	net := startSupernodes(t, 3)
	aliceHome, bobHome := initHome(t, "alice"), initHome(t, "bob")
	alice := startOn(t, aliceHome, net)
	// bob listens on QUIC only: a dial to a QUIC port nobody serves any more
	// waits for a handshake timeout, as a device that just went offline does.
	bob := startNodeWith(t, Config{Home: bobHome, Listen: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, Bootstrap: net.infos(),
		RetryInterval: 100 * time.Millisecond, FetchInterval: 500 * time.Millisecond, DeliveryTimeout: 10 * time.Second})
	ctx := context.Background()
	res, err := alice.Send(ctx, "bob", "are you there?")
	if err != nil || len(res.Delivered) != 1 {
		t.Fatalf("send to an online bob: %+v, %v", res, err)
	}
	bobID := bob.ID().String()
	bob.Close()

	start := time.Now()
	res, err = alice.Send(ctx, "bob", "gone already?")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > sendWait+time.Second {
		t.Fatalf("send to a device that just went offline took %s", took)
	}
	if len(res.Delivered) != 0 || len(res.Refused) != 0 || len(res.Queued)+len(res.Mailbox) != 1 {
		t.Fatalf("send to an offline bob: %+v", res)
	}
	// The attempt goes on: the message reaches bob's mailboxes.
	for deadline := time.Now().Add(20 * time.Second); ; {
		h, err := alice.History(ctx, "bob", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) == 1 && len(h[0].Devices) == 1 && h[0].Devices[0].Device == bobID && h[0].Devices[0].State == "mailbox" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never reached bob's mailboxes: %+v", h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
