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
		{"invite", `{"t":"invite","call":"0a","seq":1,"from":"alice","record":"AA==","sdp":"v=0"}`, true},
		{"ringing", `{"t":"ringing","call":"0a","seq":1}`, true},
		{"accept", `{"t":"accept","call":"0a","seq":2,"ack":1,"sdp":"v=0"}`, true},
		{"candidate", `{"t":"candidate","call":"0a","seq":3,"cand":"{}"}`, true},
		{"reject", `{"t":"reject","call":"0a","seq":1,"reason":"busy"}`, true},
		{"cancel", `{"t":"cancel","call":"0a","seq":4,"reason":"answered elsewhere"}`, true},
		{"restart", `{"t":"restart","call":"0a","seq":9,"restart":1,"sdp":"v=0"}`, true},
		{"restart-answer", `{"t":"restart-answer","call":"0a","seq":9,"restart":1,"sdp":"v=0"}`, true},
		{"restart without number", `{"t":"restart","call":"0a","seq":9,"sdp":"v=0"}`, false},
		{"restart number on hangup", `{"t":"hangup","call":"0a","seq":9,"restart":2}`, false},
		{"hangup", `{"t":"hangup","call":"0a","seq":5}`, true},
		{"hangup without seq", `{"t":"hangup","call":"0a"}`, false},
		{"ping", `{"t":"ping","call":"0a","ack":7}`, true},
		{"pong", `{"t":"pong","call":"0a"}`, true},
		{"ping with seq", `{"t":"ping","call":"0a","seq":3}`, false},
		{"resume", `{"t":"resume","call":"0a","ack":12}`, true},
		{"resumed", `{"t":"resumed","call":"0a","ack":3}`, true},
		{"resume with sdp", `{"t":"resume","call":"0a","sdp":"v=0"}`, false},
		{"ping with SDP", `{"t":"ping","call":"0a","sdp":"v=0"}`, false},
		{"invite without sdp", `{"t":"invite","call":"0a","seq":1,"from":"alice","record":"AA=="}`, false},
		{"invite without record", `{"t":"invite","call":"0a","seq":1,"from":"alice","sdp":"v=0"}`, false},
		{"accept without sdp", `{"t":"accept","call":"0a","seq":1}`, false},
		{"ringing with sdp", `{"t":"ringing","call":"0a","seq":1,"sdp":"v=0"}`, false},
		{"hangup with record", `{"t":"hangup","call":"0a","seq":1,"record":"AA=="}`, false},
		{"guest invite", `{"t":"invite","call":"0a","seq":1,"guest":true,"sdp":"v=0"}`, true},
		{"guest invite claiming a handle", `{"t":"invite","call":"0a","seq":1,"guest":true,"from":"alice","sdp":"v=0"}`, false},
		{"guest invite with a record", `{"t":"invite","call":"0a","seq":1,"guest":true,"from":"alice","record":"AA==","sdp":"v=0"}`, false},
		{"invite with neither caller nor guest", `{"t":"invite","call":"0a","seq":1,"sdp":"v=0"}`, false},
		{"guest on accept", `{"t":"accept","call":"0a","seq":2,"guest":true,"sdp":"v=0"}`, false},
		{"end of candidates", `{"t":"candidate","call":"0a","seq":6}`, true},
		{"candidate on hangup", `{"t":"hangup","call":"0a","seq":1,"cand":"x"}`, false},
		{"bad call id", `{"t":"ringing","call":"xyz","seq":1}`, false},
		{"no call id", `{"t":"ringing","seq":1}`, false},
		{"unknown type", `{"t":"transfer","call":"0a","seq":1}`, false},
		{"oversized sdp", `{"t":"accept","call":"0a","seq":1,"sdp":"` + strings.Repeat("a", maxSDPBytes+1) + `"}`, false},
		{"unknown field", `{"t":"hangup","call":"0a","seq":1,"x":1}`, false},
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
	f.Add([]byte(`{"t":"hangup","call":"0a","seq":3,"ack":2}`))
	f.Add([]byte(`{"t":"resume","call":"0a","ack":12}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeCallFrame(b)
		if err != nil {
			return
		}
		if len(fr.SDP) > maxSDPBytes || !validID(fr.Call) || fr.Guest && (fr.From != "" || fr.Record != nil) {
			t.Fatal("accepted an out-of-bounds frame")
		}
	})
}
