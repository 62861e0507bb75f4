package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestFrameEncoding(t *testing.T) {
	cases := []struct {
		name    string
		payload []byte
		want    []byte
		err     error
	}{
		{"one byte", []byte("x"), []byte{0, 0, 0, 1, 'x'}, nil},
		{"at limit", bytes.Repeat([]byte{7}, 8), append([]byte{0, 0, 0, 8}, bytes.Repeat([]byte{7}, 8)...), nil},
		{"over limit", bytes.Repeat([]byte{7}, 9), nil, ErrFrameTooLarge},
		{"empty", nil, nil, ErrEmptyFrame},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteFrame(&buf, tc.payload, 8)
			if !errors.Is(err, tc.err) {
				t.Fatalf("WriteFrame error = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if !bytes.Equal(buf.Bytes(), tc.want) {
				t.Fatalf("bytes = %x, want %x", buf.Bytes(), tc.want)
			}
			got, err := ReadFrame(&buf, 8)
			if err != nil || !bytes.Equal(got, tc.payload) {
				t.Fatalf("ReadFrame = %x, %v", got, err)
			}
		})
	}
}

func TestReadFrameErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		err  error
	}{
		{"clean eof", nil, io.EOF},
		{"cut header", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"cut body", []byte{0, 0, 0, 4, 'a'}, io.ErrUnexpectedEOF},
		{"declared too large", []byte{0xff, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
		{"zero length", []byte{0, 0, 0, 0}, ErrEmptyFrame},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tc.in), 1024)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestDecodeJSONStrict(t *testing.T) {
	type msg struct {
		A int `json:"a"`
	}
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"plain", `{"a":1}`, true},
		{"unknown field", `{"a":1,"b":2}`, false},
		{"trailing object", `{"a":1}{"a":2}`, false},
		{"trailing garbage", `{"a":1} x`, false},
		{"not an object", `[1]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m msg
			err := DecodeJSON([]byte(tc.in), &m)
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeJSON(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 'x'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := ReadFrame(bytes.NewReader(in), 64)
		if err == nil && (len(b) == 0 || len(b) > 64) {
			t.Fatalf("accepted a frame of %d bytes", len(b))
		}
	})
}
