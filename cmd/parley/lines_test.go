package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadLines(t *testing.T) {
	const max = 8
	long := strings.Repeat("x", 200<<10) // longer than any bufio buffer
	cases := []struct {
		name string
		in   string
		want []inputLine
	}{
		{"plain", "a\nbb\n", []inputLine{{1, "a", 1}, {2, "bb", 2}}},
		{"no final newline", "a\nbb", []inputLine{{1, "a", 1}, {2, "bb", 2}}},
		{"crlf", "a\r\nbb\r\n", []inputLine{{1, "a", 1}, {2, "bb", 2}}},
		{"empty lines kept", "\n\na\n", []inputLine{{1, "", 0}, {2, "", 0}, {3, "a", 1}}},
		{"exactly max", "12345678\n", []inputLine{{1, "12345678", 8}}},
		{"exactly max, crlf", "12345678\r\n", []inputLine{{1, "12345678", 8}}},
		{"one over max", "123456789\nok\n", []inputLine{{1, "12345678", 9}, {2, "ok", 2}}},
		{"over the buffer, lines after it kept", "a\n" + long + "\nb\nc", []inputLine{{1, "a", 1}, {2, long[:max], len(long)}, {3, "b", 1}, {4, "c", 1}}},
		{"over the buffer, crlf", long + "\r\nb\r\n", []inputLine{{1, long[:max], len(long)}, {2, "b", 1}}},
		{"lone cr kept", "a\rb\n", []inputLine{{1, "a\rb", 3}}},
		{"nothing", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []inputLine
			// One byte per read: fragments must not change the lines.
			err := readLines(iotest.OneByteReader(strings.NewReader(tc.in)), max, func(l inputLine) { got = append(got, l) })
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v\nwant %v", trim(got), trim(tc.want))
			}
		})
	}
	t.Run("read error is returned", func(t *testing.T) {
		boom := errors.New("boom")
		var got []inputLine
		err := readLines(iotest.DataErrReader(iotest.ErrReader(boom)), max, func(l inputLine) { got = append(got, l) })
		if !errors.Is(err, boom) || len(got) != 0 {
			t.Fatalf("err %v, lines %v", err, got)
		}
	})
}

func trim(ls []inputLine) []inputLine {
	out := make([]inputLine, len(ls))
	for i, l := range ls {
		if len(l.Text) > 20 {
			l.Text = l.Text[:20] + "…"
		}
		out[i] = l
	}
	return out
}

func TestChatOutcome(t *testing.T) {
	cases := []struct {
		name         string
		sent, failed int
		readErr      error
		wantErr      string
	}{
		{"all sent", 3, 0, nil, ""},
		{"one refused", 3, 1, nil, "1 line(s) not sent"},
		{"read error", 2, 0, errors.New("boom"), "read input: boom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := chatOutcome(tc.sent, tc.failed, tc.readErr)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want %q", err, tc.wantErr)
			}
		})
	}
}
