package turncreds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-net/parley/internal/wire"
)

// TestCredentialFrameBytes: the exact encoding of both kinds of frame.
func TestCredentialFrameBytes(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		json string
	}{
		{"credentials", Frame{URLs: []string{"turn:203.0.113.7:3479?transport=udp"}, Username: "1700000000:alice",
			Credential: "tB4RxQmOW/JrWMYl1cDv0ICYtdw=", TTLSeconds: 3600},
			`{"urls":["turn:203.0.113.7:3479?transport=udp"],"username":"1700000000:alice","credential":"tB4RxQmOW/JrWMYl1cDv0ICYtdw=","ttl_s":3600}`},
		{"error", Frame{Error: "rate limited"}, `{"error":"rate limited"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := wire.WriteJSON(&buf, tc.f, MaxFrame); err != nil {
				t.Fatal(err)
			}
			want := append([]byte{0, 0, 0, byte(len(tc.json))}, tc.json...)
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("frame\n%q\nwant\n%q", buf.Bytes(), want)
			}
			got, err := DecodeFrame([]byte(tc.json))
			if err != nil || !reflect.DeepEqual(*got, tc.f) {
				t.Fatalf("decode: %+v, %v", got, err)
			}
		})
	}
}

func TestDecodeCredentialFrame(t *testing.T) {
	frame := func(urls, user, cred string, ttl int) string {
		return fmt.Sprintf(`{"urls":[%s],"username":%q,"credential":%q,"ttl_s":%d}`, urls, user, cred, ttl)
	}
	const u, c = "1700000000:alice", "tB4RxQmOW/JrWMYl1cDv0ICYtdw="
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"valid", frame(`"turn:203.0.113.7:3479?transport=udp"`, u, c, 3600), true},
		{"valid, three transports", frame(`"turn:h.example:3479?transport=udp","turn:h.example:3479?transport=tcp","turns:h.example:5349?transport=tcp"`, u, c, 3600), true},
		{"valid, IPv6 literal, no query", frame(`"turn:[2001:db8::1]:3479"`, u, c, 1), true},
		{"valid error", `{"error":"rate limited: retry later"}`, true},
		{"unknown field", `{"error":"x","extra":1}`, false},
		{"trailing data", `{"error":"x"}{}`, false},
		{"error and credentials", `{"error":"x","username":"1700000000:alice"}`, false},
		{"empty object", `{}`, false},
		{"no URLs", frame(``, u, c, 3600), false},
		{"nine URLs", frame(strings.TrimSuffix(strings.Repeat(`"turn:h:1",`, 9), ","), u, c, 3600), false},
		{"stun scheme", frame(`"stun:203.0.113.7:3478"`, u, c, 3600), false},
		{"turns over udp", frame(`"turns:h.example:5349?transport=udp"`, u, c, 3600), false},
		{"other query", frame(`"turn:h.example:3479?transport=sctp"`, u, c, 3600), false},
		{"no port", frame(`"turn:h.example"`, u, c, 3600), false},
		{"port 0", frame(`"turn:h.example:0"`, u, c, 3600), false},
		{"port 65536", frame(`"turn:h.example:65536"`, u, c, 3600), false},
		{"IPv6 with zone", frame(`"turn:[fe80::1%eth0]:3479"`, u, c, 3600), false},
		{"host with slash", frame(`"turn:h/x:3479"`, u, c, 3600), false},
		{"URL too long", frame(`"turn:`+strings.Repeat("a", 300)+`:1"`, u, c, 3600), false},
		{"bad username", frame(`"turn:h:1"`, "alice", c, 3600), false},
		{"empty credential", frame(`"turn:h:1"`, u, "", 3600), false},
		{"credential with newline", frame(`"turn:h:1"`, u, "a\nb", 3600), false},
		{"ttl zero", frame(`"turn:h:1"`, u, c, 0), false},
		{"ttl eight days", frame(`"turn:h:1"`, u, c, 8*86400), false},
		{"negative ttl", frame(`"turn:h:1"`, u, c, -5), false},
		{"error too long", `{"error":"` + strings.Repeat("x", 257) + `"}`, false},
		{"error not ASCII", `{"error":"r\u00e9fus\u00e9"}`, false},
		{"not JSON", `turn:h:1`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeFrame = %+v, %v; want ok=%v", f, err, tc.ok)
			}
		})
	}
}

// FuzzDecodeCredentialFrame: the decoder never panics, and whatever it
// accepts is either an error or credentials, and survives a round trip.
func FuzzDecodeCredentialFrame(f *testing.F) {
	for _, s := range []string{
		`{"urls":["turn:203.0.113.7:3479?transport=udp"],"username":"1700000000:alice","credential":"tB4RxQmOW/JrWMYl1cDv0ICYtdw=","ttl_s":3600}`,
		`{"urls":["turns:[2001:db8::1]:5349?transport=tcp"],"username":"1:a","credential":"x","ttl_s":1}`,
		`{"error":"rate limited"}`, `{}`, `null`, `[]`, `{"urls":null}`, `{"ttl_s":1e9}`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if (fr.Error != "") == (fr.Username != "") {
			t.Fatalf("accepted a frame that is both or neither: %+v", fr)
		}
		again, err := json.Marshal(fr)
		if err != nil {
			t.Fatal(err)
		}
		fr2, err := DecodeFrame(again)
		if err != nil || !reflect.DeepEqual(fr, fr2) {
			t.Fatalf("round trip of %s: %+v, %v", again, fr2, err)
		}
		if len(again) > MaxFrame {
			t.Fatalf("accepted frame re-encodes to %d bytes, over the %d limit", len(again), MaxFrame)
		}
	})
}
