package wire

import (
	"io"
	"time"
)

// Stream is what WriteLoop writes to: a libp2p stream, say.
type Stream interface {
	io.Writer
	SetWriteDeadline(time.Time) error
	Reset() error
	Close() error
}

// WriteLoop writes the frames from out to s as JSON (WriteJSON, at most
// max bytes each, each within timeout), in order, until quit is closed;
// then it writes what is still queued, calls closing (when not nil) and
// closes s. A failed write resets s and ends the loop. It is a stream's
// one writer, so frames sent from many goroutines go out whole and in the
// order they were queued.
func WriteLoop[T any](s Stream, out <-chan T, quit <-chan struct{}, max int, timeout time.Duration, closing func()) {
	write := func(f T) bool {
		_ = s.SetWriteDeadline(time.Now().Add(timeout)) // a stream without deadlines still writes
		if err := WriteJSON(s, f, max); err != nil {
			_ = s.Reset() // the peer sees the stream fail; nothing else to tell
			return false
		}
		return true
	}
	for {
		select {
		case f := <-out:
			if !write(f) {
				return
			}
		case <-quit:
			for {
				select {
				case f := <-out:
					if !write(f) {
						return
					}
				default:
					if closing != nil {
						closing()
					}
					_ = s.Close() // what was queued is written; a failed close is the peer's to see
					return
				}
			}
		}
	}
}
