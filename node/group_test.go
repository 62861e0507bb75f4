package node

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/wire"
)

func TestGroupConversation(t *testing.T) {
	sn := startSupernode(t)
	ctx := context.Background()
	alice := startNode(t, initHome(t, "alice"), sn)
	bobHome := initHome(t, "bob")
	phoneHome := linkDevice(t, bobHome, "bob-phone")
	bob := startNode(t, bobHome, sn)
	phone := startNode(t, phoneHome, sn)
	carol := startNode(t, initHome(t, "carol"), sn)
	mallory := startNode(t, initHome(t, "mallory"), sn)

	g, err := alice.CreateGroup(ctx, "team", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 3 {
		t.Fatalf("members %v", g.Members)
	}
	if _, err := alice.Send(ctx, "#team", "standup in 5"); err != nil {
		t.Fatal(err)
	}
	// Members learn the group from its messages and can answer in it.
	waitGroupHistory(t, carol, "team", 2)
	if _, err := carol.Send(ctx, "#team", "on my way"); err != nil {
		t.Fatal(err)
	}
	var want []Message
	for _, n := range []*Node{alice, bob, phone, carol} {
		h := waitGroupHistory(t, n, "team", 3)
		if want == nil {
			want = h
			continue
		}
		for i := range want {
			if h[i].ID != want[i].ID {
				t.Fatalf("%s sees the group in another order", n.Identity().Handle())
			}
		}
	}
	// mallory is not a member: she knows no #team, and a group message she
	// forges, naming herself a member of the group's ID, is refused.
	if _, err := mallory.Send(ctx, "#team", "let me in"); !errors.Is(err, ErrNoSuchGroup) {
		t.Fatalf("non-member send: %v", err)
	}
	forged := &Group{ID: g.ID, Name: "team", Members: []string{"alice", "bob", "carol", "mallory"}}
	p := &Payload{Kind: kindMessage, ID: "abcdef", Conv: GroupConv(g.ID), Lamport: 9, SentMS: 1, Body: "forged", Group: forged}
	env, _ := sealEnvelope(mallory.Identity(), p, p.ID, bob.Identity().Self())
	s, err := mallory.Host().NewStream(ctx, bob.ID(), ChatProtocol)
	if err != nil {
		t.Fatal(err)
	}
	wire.WriteJSON(s, chatFrame{Type: "env", Env: env}, MaxChatFrame)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := wire.ReadFrame(s, MaxChatFrame)
	s.Close()
	var ack chatFrame
	if err != nil || json.Unmarshal(b, &ack) != nil || ack.Err == "" {
		t.Fatalf("bob took a group message from a non-member: %s %v", b, err)
	}
	if h := waitGroupHistory(t, bob, "team", 3); len(h) != 3 {
		t.Fatalf("bob's group history has %d messages", len(h))
	}
}

func waitGroupHistory(t *testing.T, n *Node, name string, want int) []Message {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if g, err := n.groupByName(context.Background(), name); err == nil {
			h, err := n.store.History(context.Background(), GroupConv(g.ID), 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(h) >= want {
				return h
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not have %d messages in #%s", n.Identity().Handle(), want, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
