package main

import (
	"reflect"
	"testing"

	"github.com/parley-net/parley/node"
)

func TestRingLine(t *testing.T) {
	type step struct {
		state string
		rang  int
	}
	cases := []struct {
		name  string
		steps []step
		want  []string
	}{
		{"one device", []step{{node.CallRinging, 1}, {node.CallRinging, 1}, {node.CallConnecting, 1}},
			[]string{"ringing (1 device(s))"}},
		{"a second device rings later", []step{{node.CallRinging, 1}, {node.CallRinging, 2}, {node.CallActive, 2}},
			[]string{"ringing (1 device(s))", "ringing (2 device(s))"}},
		{"answered before the ringing was seen", []step{{node.CallConnecting, 2}, {node.CallActive, 2}},
			[]string{"ringing (2 device(s))"}},
		{"no device rang yet", []step{{node.CallRinging, 0}, {node.CallRinging, 3}},
			[]string{"ringing (3 device(s))"}},
		{"a count after the answer is not news", []step{{node.CallRinging, 1}, {node.CallActive, 2}},
			[]string{"ringing (1 device(s))"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			rang := 0
			for _, s := range tc.steps {
				if l := ringLine(&rang, node.CallInfo{State: s.state, DevicesRang: s.rang}); l != "" {
					got = append(got, l)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBitrateLine(t *testing.T) {
	cases := []struct {
		name string
		s    node.CallStats
		want string
	}{
		{"first second", node.CallStats{PacketsIn: 40, PacketsOut: 50}, "rx -- kb/s, tx -- kb/s"},
		{"steady", node.CallStats{RecvKbps: 14.52, SendKbps: 15.01, PacketsIn: 400, PacketsOut: 400}, "rx 14.5 kb/s, tx 15.0 kb/s"},
		{"nothing received", node.CallStats{SendKbps: 15, PacketsOut: 400}, "rx 0.0 kb/s, tx 15.0 kb/s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := bitrateLine(&tc.s); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
