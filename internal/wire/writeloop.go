package wire

import (
	"io"
	"sync"
	"time"
)

// Stream is what WriteLoop writes to and an Ending ends: a libp2p stream,
// say.
type Stream interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	// CloseWrite ends our side: the peer reads what we wrote, then EOF,
	// and may go on writing to us.
	CloseWrite() error
	Reset() error
	Close() error
}

// WriteLoop writes the frames from out to s as JSON (WriteJSON, at most
// max bytes each, each within timeout), in order, until quit is closed;
// then it writes what is still queued and closes s for writing. It is a
// stream's one writer, so frames sent from many goroutines go out whole
// and in the order they were queued.
//
// It never closes s for reading nor resets it: the peer's frames in flight
// must still arrive. A stream closed both ways makes the peer's next write
// fail (QUIC's STOP_SENDING), and a peer whose failed write reset the
// stream threw away the frames it had not read yet — the reject or the
// hangup that said why. It returns nil once s is closed for writing, or
// the error of the write that failed (then s is left as it is: its reader
// may still have the peer's last frames to read). An Ending ends s.
func WriteLoop[T any](s Stream, out <-chan T, quit <-chan struct{}, max int, timeout time.Duration) error {
	write := func(f T) error {
		_ = s.SetWriteDeadline(time.Now().Add(timeout)) // a stream without deadlines still writes
		return WriteJSON(s, f, max)
	}
	for {
		select {
		case f := <-out:
			if err := write(f); err != nil {
				return err
			}
		case <-quit:
			for {
				select {
				case f := <-out:
					if err := write(f); err != nil {
						return err
					}
				default:
					return s.CloseWrite()
				}
			}
		}
	}
}

// maxDrain bounds what an Ending reads of a stream nobody else reads.
const maxDrain = 1 << 20

// An Ending ends a stream that one writer (WriteLoop) and at most one
// reader use, the way TCP's lingering close does: the stream is closed
// for good once both have stopped, so the peer reads our last frame and
// its own frames in flight never fail; it is reset if the reader has not
// stopped linger after the writer did (a peer that never closes its
// side). A stream whose writer stops before any reader started is
// drained (read and discarded, maxDrain bytes at most) for the peer's
// close, within linger.
type Ending struct {
	s      Stream
	linger time.Duration
	spawn  func(func()) // runs the drain
	done   func()       // called once the stream is closed or reset

	mu       sync.Mutex
	reading  bool // a reader (or the drain) started
	readEnd  bool
	writeEnd bool
	finished bool
	timer    *time.Timer
}

// NewEnding makes the Ending of s. spawn runs the drain's goroutine (under
// its owner's WaitGroup, say); done, when not nil, is called once the
// stream is closed or reset.
func NewEnding(s Stream, linger time.Duration, spawn func(func()), done func()) *Ending {
	return &Ending{s: s, linger: linger, spawn: spawn, done: done}
}

// StartRead says a reader starts. It returns false, and the caller must
// not read, if one already did or the stream is already being drained.
func (e *Ending) StartRead() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reading {
		return false
	}
	e.reading = true
	return true
}

// ReadEnded says the reader stopped (it read EOF or an error).
func (e *Ending) ReadEnded() {
	e.mu.Lock()
	e.readEnd = true
	finish := e.writeEnd
	e.mu.Unlock()
	if finish {
		e.finish(false)
	}
}

// WriteEnded says the writer stopped (WriteLoop returned).
func (e *Ending) WriteEnded() {
	e.mu.Lock()
	e.writeEnd = true
	switch {
	case e.readEnd:
		e.mu.Unlock()
		e.finish(false)
	case e.reading:
		e.timer = time.AfterFunc(e.linger, func() { e.finish(true) })
		e.mu.Unlock()
	default:
		e.reading = true
		e.mu.Unlock()
		e.spawn(e.drain)
	}
}

// Reset resets the stream at once.
func (e *Ending) Reset() { e.finish(true) }

func (e *Ending) drain() {
	_ = e.s.SetReadDeadline(time.Now().Add(e.linger)) // a stream without deadlines is still reset by Reset
	_, _ = io.Copy(io.Discard, io.LimitReader(e.s, maxDrain))
	e.ReadEnded()
}

// finish closes the stream (reset: resets it) once.
func (e *Ending) finish(reset bool) {
	e.mu.Lock()
	if e.finished {
		e.mu.Unlock()
		return
	}
	e.finished = true
	if e.timer != nil {
		e.timer.Stop()
	}
	e.mu.Unlock()
	if reset {
		_ = e.s.Reset() // the peer sees the stream fail; nothing to tell
	} else {
		_ = e.s.Close() // both sides are done: nothing is lost if it fails
	}
	if e.done != nil {
		e.done()
	}
}
