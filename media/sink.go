package media

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Sink consumes the decoded audio of a Session: 48 kHz mono frames of
// FrameSamples samples, in playout order, starting at the first decoded
// frame and paced in real time. The frame slice is reused after WriteFrame
// returns. A Session calls WriteFrame from a single goroutine; after an
// error the session logs it and stops using the sink for the rest of the
// call.
type Sink interface {
	WriteFrame(frame []int16) error
}

// ErrClosed is returned by operations on a closed sink or session.
var ErrClosed = errors.New("media: closed")

// ErrCaptureFull is returned by CaptureSink.WriteFrame once its limit is
// reached.
var ErrCaptureFull = errors.New("media: capture sink full")

// DiscardSink returns a Sink that drops everything.
func DiscardSink() Sink { return discard{} }

type discard struct{}

func (discard) WriteFrame([]int16) error { return nil }

// DefaultCaptureLimit is the CaptureSink limit used when 0 is given:
// ten minutes of audio (57.6 MB).
const DefaultCaptureLimit = 10 * 60 * SampleRate

// CaptureSink keeps decoded audio in memory, for tests and demos. It is
// safe for concurrent use: a session writes while a test waits and reads.
type CaptureSink struct {
	mu      sync.Mutex
	samples []int16
	limit   int
	waiters []captureWaiter
}

type captureWaiter struct {
	n  int
	ch chan struct{}
}

// NewCaptureSink returns a sink that keeps up to limit samples; 0 means
// DefaultCaptureLimit. Writes beyond the limit fail with ErrCaptureFull.
func NewCaptureSink(limit int) *CaptureSink {
	if limit <= 0 {
		limit = DefaultCaptureLimit
	}
	return &CaptureSink{limit: limit}
}

// WriteFrame implements Sink.
func (c *CaptureSink) WriteFrame(frame []int16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.samples)+len(frame) > c.limit {
		return fmt.Errorf("%w: limit %d samples", ErrCaptureFull, c.limit)
	}
	c.samples = append(c.samples, frame...)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if len(c.samples) >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
	return nil
}

// Len returns the number of samples captured so far.
func (c *CaptureSink) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.samples)
}

// Samples returns a copy of everything captured so far.
func (c *CaptureSink) Samples() []int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int16(nil), c.samples...)
}

// Wait blocks until at least n samples have been captured or ctx ends.
func (c *CaptureSink) Wait(ctx context.Context, n int) error {
	c.mu.Lock()
	if len(c.samples) >= n {
		c.mu.Unlock()
		return nil
	}
	if n > c.limit {
		c.mu.Unlock()
		return fmt.Errorf("%w: waiting for %d samples, limit %d", ErrCaptureFull, n, c.limit)
	}
	ch := make(chan struct{})
	c.waiters = append(c.waiters, captureWaiter{n: n, ch: ch})
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		for i, w := range c.waiters {
			if w.ch == ch {
				c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		return fmt.Errorf("media: waiting for %d captured samples (have %d): %w", n, c.Len(), ctx.Err())
	}
}
