package guestcall

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeGuestFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"ringing", `{"t":"ringing","call":"0a","seq":1}`, true},
		{"accept", `{"t":"accept","call":"0a","seq":2,"ack":1,"sdp":"v=0"}`, true},
		{"accept without SDP", `{"t":"accept","call":"0a","seq":2}`, false},
		{"candidate", `{"t":"candidate","call":"0a","seq":3,"cand":"{}"}`, true},
		{"ping", `{"t":"ping","call":"0a","ack":3}`, true},
		{"an invite from the callee", `{"t":"invite","call":"0a","seq":1,"guest":true,"sdp":"v=0"}`, false},
		{"a restart from the callee", `{"t":"restart","call":"0a","seq":4,"restart":1,"sdp":"v=0"}`, false},
		{"restart-answer", `{"t":"restart-answer","call":"0a","seq":5,"restart":1,"sdp":"v=0"}`, true},
		{"restart-answer without SDP", `{"t":"restart-answer","call":"0a","seq":5,"restart":1}`, false},
		{"restart-answer without its number", `{"t":"restart-answer","call":"0a","seq":5,"sdp":"v=0"}`, false},
		{"SDP too long", `{"t":"accept","call":"0a","seq":2,"sdp":"` + strings.Repeat("a", maxGuestSDP+1) + `"}`, false},
		{"call id too long", `{"t":"ringing","call":"` + strings.Repeat("a", 65) + `","seq":1}`, false},
		{"not JSON", `{"t":`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeGuestFrame([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("decodeGuestFrame(%.60s) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, errGuestFrame) {
				t.Fatalf("error %v is not errGuestFrame", err)
			}
		})
	}
}

func FuzzDecodeGuestFrame(f *testing.F) {
	f.Add([]byte(`{"t":"accept","call":"0a","seq":2,"ack":1,"sdp":"v=0"}`))
	f.Add([]byte(`{"t":"candidate","call":"0a","seq":3,"cand":"{}"}`))
	f.Add([]byte(`{"t":"hangup","call":"0a","seq":3,"reason":"lost"}`))
	f.Add([]byte(`{"t":"restart-answer","call":"0a","seq":5,"restart":1,"sdp":"v=0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeGuestFrame(b)
		if err != nil {
			return
		}
		if len(b) > maxGuestFrame || len(fr.SDP) > maxGuestSDP || len(fr.Candidate) > maxGuestCandidate || len(fr.Call) > 64 {
			t.Fatalf("accepted an out-of-bounds frame %+v", fr)
		}
	})
}
