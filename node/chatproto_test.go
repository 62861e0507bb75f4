package node

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeChatFrame(t *testing.T) {
	msg := func(body string) string {
		return `{"t":"msg","msg":{"id":"0a1b","conv":"dm:alice:bob","from":"alice","lamport":1,"sent_ms":5,"body":"` + body + `"}}`
	}
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"hello", `{"t":"hello","record":"eyJ2IjoxfQ=="}`, true},
		{"msg", msg("hi"), true},
		{"ack", `{"t":"ack","id":"0a1b"}`, true},
		{"ack with refusal", `{"t":"ack","id":"0a1b","err":"no"}`, true},
		{"unknown type", `{"t":"boom"}`, false},
		{"hello without record", `{"t":"hello"}`, false},
		{"msg without body", msg(""), false},
		{"msg body too large", msg(strings.Repeat("x", MaxBodyBytes+1)), false},
		{"msg id not hex", `{"t":"msg","msg":{"id":"ZZ","conv":"dm:alice:bob","from":"alice","lamport":1,"sent_ms":5,"body":"x"}}`, false},
		{"msg conv unsorted", `{"t":"msg","msg":{"id":"0a","conv":"dm:bob:alice","from":"alice","lamport":1,"sent_ms":5,"body":"x"}}`, false},
		{"msg zero clock", `{"t":"msg","msg":{"id":"0a","conv":"dm:alice:bob","from":"alice","lamport":0,"sent_ms":5,"body":"x"}}`, false},
		{"unknown field", `{"t":"ack","id":"0a","extra":1}`, false},
		{"ack with msg", `{"t":"ack","id":"0a","msg":{}}`, false},
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

func TestDMConv(t *testing.T) {
	if DMConv("bob", "alice") != DMConv("alice", "bob") || DMConv("alice", "bob") != "dm:alice:bob" {
		t.Fatal("DMConv is not symmetric")
	}
	if got := convPeer("dm:alice:bob", "bob"); got != "alice" {
		t.Fatalf("convPeer = %q", got)
	}
}

func FuzzDecodeChatFrame(f *testing.F) {
	f.Add([]byte(`{"t":"msg","msg":{"id":"0a1b","conv":"dm:alice:bob","from":"alice","lamport":1,"sent_ms":5,"body":"hi"}}`))
	f.Add([]byte(`{"t":"ack","id":"0a1b"}`))
	f.Add([]byte(`{"t":"hello","record":"AA=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeChatFrame(b)
		if err != nil {
			return
		}
		if fr.Type == "msg" && (len(fr.Msg.Body) > MaxBodyBytes || fr.Msg.check() != nil) {
			t.Fatalf("accepted an invalid message")
		}
	})
}
