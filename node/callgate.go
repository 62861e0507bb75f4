package node

import (
	"bytes"
	"io"
	"sync"

	"github.com/parley-net/parley/media"
)

// A caller forks a call: one media session per callee device, each made
// before anyone answers, because every invite carries its own offer. Only
// the leg that wins may read the microphone, play to the speaker or write
// the recording; a gate stands between each leg and the call's audio ends
// until the race is decided.
type gate struct {
	mu      sync.Mutex
	decided bool
	won     bool
	src     media.Source
	sink    media.Sink
	rec     io.Writer
	pending bytes.Buffer // recorder bytes written before the decision
}

func (g *gate) state() (decided, won bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.decided, g.won
}

// decide opens (won) or shuts the gate for good. A won gate flushes what the
// recorder wrote so far (the Ogg headers).
func (g *gate) decide(won bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.decided {
		return nil
	}
	g.decided, g.won = true, won
	if won && g.rec != nil && g.pending.Len() > 0 {
		_, err := g.rec.Write(g.pending.Bytes())
		g.pending.Reset()
		return err
	}
	g.pending.Reset()
	return nil
}

type gatedSource struct{ g *gate }

func (s gatedSource) ReadFrame(frame []int16) error {
	if _, won := s.g.state(); won && s.g.src != nil {
		return s.g.src.ReadFrame(frame)
	}
	clear(frame)
	return nil
}

type gatedSink struct{ g *gate }

func (s gatedSink) WriteFrame(frame []int16) error {
	if _, won := s.g.state(); won && s.g.sink != nil {
		return s.g.sink.WriteFrame(frame)
	}
	return nil
}

type gatedWriter struct{ g *gate }

func (w gatedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	switch {
	case !w.g.decided:
		if w.g.pending.Len()+len(p) > 64<<10 {
			return 0, io.ErrShortBuffer
		}
		return w.g.pending.Write(p)
	case w.g.won:
		return w.g.rec.Write(p)
	}
	return len(p), nil
}
