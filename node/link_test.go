package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLinkSyncUnlink(t *testing.T) {
	sn := startSupernode(t)
	ctx := context.Background()
	alice := startNode(t, initHome(t, "alice"), sn)
	bobHome := initHome(t, "bob")
	laptop := startNode(t, bobHome, sn)
	for _, body := range []string{"before the phone 1", "before the phone 2"} {
		if _, err := alice.Send(ctx, "bob", body); err != nil {
			t.Fatal(err)
		}
	}

	code, err := laptop.LinkCode()
	if err != nil {
		t.Fatal(err)
	}
	phoneHome := t.TempDir()
	boot := []peer.AddrInfo{sn.AddrInfo()}
	if _, err := JoinAccount(ctx, JoinOptions{Home: phoneHome, Code: code, DeviceName: "bob-phone", Bootstrap: boot}); err != nil {
		t.Fatalf("join: %v", err)
	}
	// The code is single-use.
	if _, err := JoinAccount(ctx, JoinOptions{Home: t.TempDir(), Code: code, DeviceName: "thief", Bootstrap: boot}); err == nil {
		t.Fatal("a used pairing code linked a second device")
	}
	if len(laptop.Devices()) != 2 {
		t.Fatalf("laptop lists %d devices", len(laptop.Devices()))
	}

	phone := startNode(t, phoneHome, sn)
	if phone.Identity().Handle() != "bob" {
		t.Fatalf("phone's handle is %q", phone.Identity().Handle())
	}
	// The phone fetched the history from the laptop when it started.
	waitHistory(t, phone, "alice", 2)

	// alice learns of the phone and reaches both devices; the phone can
	// send as bob.
	if _, err := alice.Resolve(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	res, err := alice.Send(ctx, "bob", "to both devices")
	if err != nil || len(res.Delivered) != 2 {
		t.Fatalf("send to both: %+v %v", res, err)
	}
	waitHistory(t, phone, "alice", 3)
	if _, err := phone.Send(ctx, "alice", "from bob's phone"); err != nil {
		t.Fatal(err)
	}
	waitHistory(t, alice, "bob", 4)
	waitHistory(t, laptop, "alice", 4) // the sender's other device gets a copy

	// Unlinked, the phone gets nothing new, and what it signs is refused.
	if _, err := laptop.Unlink(ctx, phone.ID().String()); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Resolve(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	res, err = alice.Send(ctx, "bob", "after unlink")
	if err != nil || len(res.Delivered) != 1 || res.Delivered[0] != laptop.ID().String() {
		t.Fatalf("after unlink: %+v %v", res, err)
	}
	res, err = phone.Send(ctx, "alice", "from an unlinked phone")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 0 {
		t.Fatalf("alice accepted a message from an unlinked device: %+v", res)
	}
	h, _ := alice.store.History(ctx, DMConv("alice", "bob"), 0)
	for _, m := range h {
		if m.Body == "from an unlinked phone" && !m.Outgoing {
			t.Fatal("stored a message from an unlinked device")
		}
	}
	if _, _, err := ParseLinkCode("parley-link:garbage"); !errors.Is(err, ErrBadCode) {
		t.Fatalf("bad code: %v", err)
	}
}

func waitHistory(t *testing.T, n *Node, with string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		h, err := n.store.History(context.Background(), DMConv(n.Identity().Handle(), with), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d of %d messages with %s", n.Identity().Handle(), len(h), want, with)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
