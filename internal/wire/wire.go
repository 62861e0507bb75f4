// Package wire frames the messages of parley's libp2p stream protocols.
//
// A frame is a 4-byte big-endian payload length followed by the payload. Every
// reader names a maximum size and refuses a larger frame before reading it, so a
// peer cannot make us allocate more than that. Payloads are JSON objects; a
// decoder refuses unknown fields and trailing data, so a frame has exactly one
// meaning. wire never interprets the messages: the protocols do.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrFrameTooLarge is returned when a frame's declared length exceeds the limit.
var ErrFrameTooLarge = errors.New("frame too large")

// ErrEmptyFrame is returned for a zero-length frame, which no protocol sends.
var ErrEmptyFrame = errors.New("empty frame")

// WriteFrame writes payload as one frame. It refuses payloads over max bytes.
func WriteFrame(w io.Writer, payload []byte, max int) error {
	if len(payload) == 0 {
		return ErrEmptyFrame
	}
	if len(payload) > max {
		return fmt.Errorf("write frame of %d bytes (limit %d): %w", len(payload), max, ErrFrameTooLarge)
	}
	buf := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame of at most max bytes. A clean end of stream before
// the first header byte is io.EOF; a stream cut inside a frame is
// io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, ErrEmptyFrame
	}
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("read frame of %d bytes (limit %d): %w", n, max, ErrFrameTooLarge)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// WriteJSON encodes v and writes it as one frame.
func WriteJSON(w io.Writer, v any, max int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, b, max)
}

// ReadJSON reads one frame and decodes it strictly into v.
func ReadJSON(r io.Reader, v any, max int) error {
	b, err := ReadFrame(r, max)
	if err != nil {
		return err
	}
	return DecodeJSON(b, v)
}

// DecodeJSON decodes exactly one JSON value from b into v, refusing unknown
// fields and trailing bytes.
func DecodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode frame: %w", err)
	}
	if dec.More() {
		return errors.New("decode frame: trailing data")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return errors.New("decode frame: trailing data")
	}
	return nil
}

// MaxIDLen bounds the IDs the protocols exchange (message, envelope, call).
const MaxIDLen = 64

// ValidID reports whether s is a protocol ID: 1 to MaxIDLen lower-case hex
// digits.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
