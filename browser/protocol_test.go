package browser

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeMessage(t *testing.T) {
	long := strings.Repeat("a", maxSDP+1)
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"sdp reply", `{"t":"sdp","req":3,"sdp":"v=0"}`, true},
		{"sdp reply without req", `{"t":"sdp","sdp":"v=0"}`, false},
		{"candidate", `{"t":"cand","id":"pc1","cand":"{\"candidate\":\"candidate:1 1 udp 1 127.0.0.1 5000 typ host\"}"}`, true},
		{"end of candidates", `{"t":"cand","id":"pc1","cand":""}`, true},
		{"candidate missing", `{"t":"cand","id":"pc1"}`, false},
		{"state", `{"t":"state","id":"pc1","state":"connected"}`, true},
		{"unknown state", `{"t":"state","id":"pc1","state":"happy"}`, false},
		{"stats", `{"t":"stats","id":"pc1","stats":{"packets_in":3}}`, true},
		{"no id", `{"t":"closed"}`, false},
		{"daemon's type from the page", `{"t":"pc","id":"pc1"}`, false},
		{"unknown type", `{"t":"x"}`, false},
		{"SDP too long", `{"t":"sdp","req":1,"sdp":"` + long + `"}`, false},
		{"not JSON", `{`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMessage([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("DecodeMessage(%.60s) = %+v, %v; want ok=%v", tc.in, m, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v is not ErrBadMessage", err)
			}
		})
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"t":"sdp","req":3,"sdp":"v=0"}`))
	f.Add([]byte(`{"t":"stats","id":"pc1","stats":{"packets_in":3,"local_type":"host"}}`))
	f.Add([]byte(`{"t":"cand","id":"pc1","cand":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		if !fromPage[m.T] || len(m.SDP) > maxSDP || len(m.ID) > maxIDLen || m.ICE != nil || m.Event != nil {
			t.Fatalf("accepted %+v", m)
		}
	})
}
