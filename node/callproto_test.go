package node

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeCallFrame(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"invite", `{"t":"invite","call":"0a","from":"alice","record":"AA==","sdp":"v=0"}`, true},
		{"ringing", `{"t":"ringing","call":"0a"}`, true},
		{"accept", `{"t":"accept","call":"0a","sdp":"v=0"}`, true},
		{"candidate", `{"t":"candidate","call":"0a","cand":"{}"}`, true},
		{"reject", `{"t":"reject","call":"0a","reason":"busy"}`, true},
		{"cancel", `{"t":"cancel","call":"0a","reason":"answered elsewhere"}`, true},
		{"restart", `{"t":"restart","call":"0a","sdp":"v=0"}`, true},
		{"restart-answer", `{"t":"restart-answer","call":"0a","sdp":"v=0"}`, true},
		{"hangup", `{"t":"hangup","call":"0a"}`, true},
		{"ping", `{"t":"ping","call":"0a"}`, true},
		{"ping with SDP", `{"t":"ping","call":"0a","sdp":"v=0"}`, false},
		{"invite without sdp", `{"t":"invite","call":"0a","from":"alice","record":"AA=="}`, false},
		{"invite without record", `{"t":"invite","call":"0a","from":"alice","sdp":"v=0"}`, false},
		{"accept without sdp", `{"t":"accept","call":"0a"}`, false},
		{"ringing with sdp", `{"t":"ringing","call":"0a","sdp":"v=0"}`, false},
		{"hangup with record", `{"t":"hangup","call":"0a","record":"AA=="}`, false},
		{"end of candidates", `{"t":"candidate","call":"0a"}`, true},
		{"candidate on hangup", `{"t":"hangup","call":"0a","cand":"x"}`, false},
		{"bad call id", `{"t":"ringing","call":"xyz"}`, false},
		{"no call id", `{"t":"ringing"}`, false},
		{"unknown type", `{"t":"transfer","call":"0a"}`, false},
		{"oversized sdp", `{"t":"accept","call":"0a","sdp":"` + strings.Repeat("a", maxSDPBytes+1) + `"}`, false},
		{"unknown field", `{"t":"hangup","call":"0a","x":1}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeCallFrame([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("decodeCallFrame = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("%v does not wrap ErrBadFrame", err)
			}
		})
	}
}

func FuzzDecodeCallFrame(f *testing.F) {
	f.Add([]byte(`{"t":"invite","call":"0a","from":"alice","record":"AA==","sdp":"v=0"}`))
	f.Add([]byte(`{"t":"candidate","call":"0a","cand":"{\"candidate\":\"x\"}"}`))
	f.Add([]byte(`{"t":"hangup","call":"0a"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeCallFrame(b)
		if err != nil {
			return
		}
		if len(fr.SDP) > maxSDPBytes || !validID(fr.Call) {
			t.Fatal("accepted an out-of-bounds frame")
		}
	})
}
