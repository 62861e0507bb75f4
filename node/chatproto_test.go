package node

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeChatFrame(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"env", `{"t":"env","env":"eyJ2IjoxfQ=="}`, true},
		{"ack", `{"t":"ack","id":"0a1b"}`, true},
		{"ack with refusal", `{"t":"ack","id":"0a1b","err":"no"}`, true},
		{"ack held", `{"t":"ack","id":"0a1b","err":"held: sender not verified","held":true}`, true},
		{"ack held without reason", `{"t":"ack","id":"0a1b","held":true}`, false},
		{"env held", `{"t":"env","env":"AA==","held":true}`, false},
		{"unknown type", `{"t":"boom"}`, false},
		{"env without envelope", `{"t":"env"}`, false},
		{"env with id", `{"t":"env","env":"AA==","id":"0a"}`, false},
		{"ack id not hex", `{"t":"ack","id":"ZZ"}`, false},
		{"ack with env", `{"t":"ack","id":"0a","env":"AA=="}`, false},
		{"ack refusal too long", `{"t":"ack","id":"0a","err":"` + strings.Repeat("x", 201) + `"}`, false},
		{"unknown field", `{"t":"ack","id":"0a","extra":1}`, false},
		{"not json", `hello`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeChatFrame([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("decodeChatFrame(%.60q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
		})
	}
}

func TestConversations(t *testing.T) {
	if DMConv("bob", "alice") != DMConv("alice", "bob") || DMConv("alice", "bob") != "dm:alice:bob" {
		t.Fatal("DMConv is not symmetric")
	}
	if got := convPeer("dm:alice:bob", "bob"); got != "alice" {
		t.Fatalf("convPeer = %q", got)
	}
	g := &Group{ID: strings.Repeat("ab", 16), Name: "team", Members: []string{"alice", "bob", "carol"}}
	cases := []struct {
		name string
		conv string
		g    *Group
		ok   bool
	}{
		{"dm", "dm:alice:bob", nil, true},
		{"dm unsorted", "dm:bob:alice", nil, false},
		{"group", GroupConv(g.ID), g, true},
		{"group without description", GroupConv(g.ID), nil, false},
		{"group of another id", GroupConv(strings.Repeat("cd", 16)), g, false},
		{"group on a dm", "dm:alice:bob", g, false},
		{"group unsorted", GroupConv(g.ID), &Group{ID: g.ID, Name: "x", Members: []string{"bob", "alice"}}, false},
		{"group of one", GroupConv(g.ID), &Group{ID: g.ID, Name: "x", Members: []string{"alice"}}, false},
		{"unknown kind", "chan:x", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkConv(tc.conv, tc.g); (err == nil) != tc.ok {
				t.Fatalf("checkConv = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func FuzzDecodeChatFrame(f *testing.F) {
	f.Add([]byte(`{"t":"env","env":"eyJ2IjoxfQ=="}`))
	f.Add([]byte(`{"t":"ack","id":"0a1b"}`))
	f.Add([]byte(`{"t":"ack","id":"0a1b","err":"held","held":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeChatFrame(b)
		if err != nil {
			return
		}
		if len(fr.Env) > MaxEnvelope || (fr.Type == "ack" && !validID(fr.ID)) || (fr.Held && (fr.Type != "ack" || fr.Err == "")) {
			t.Fatalf("accepted an invalid frame")
		}
	})
}
