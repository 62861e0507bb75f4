package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/parley-net/parley/media"
)

// AudioSpec names a call's audio ends the way a user does on the command
// line. Paths must be absolute: the daemon opens them, not the CLI.
type AudioSpec struct {
	Tone    float64 `json:"tone,omitempty"`    // send a sine tone of this many Hz
	In      string  `json:"in,omitempty"`      // send a WAV file (any rate, resampled)
	Speech  bool    `json:"speech,omitempty"`  // send the speech-like test signal
	Mic     bool    `json:"mic,omitempty"`     // send the microphone
	Out     string  `json:"out,omitempty"`     // write what we hear to a WAV file
	Speaker bool    `json:"speaker,omitempty"` // play what we hear
	Record  string  `json:"record,omitempty"`  // write the received Opus packets as Ogg Opus
}

// ErrBadAudio is returned for an AudioSpec that cannot be opened.
var ErrBadAudio = errors.New("bad audio option")

// Open opens the spec's source, sink and recorder.
func (a AudioSpec) Open() (opts CallOptions, err error) {
	defer func() {
		if err != nil {
			opts.discard()
		}
	}()
	sources := 0
	for _, set := range []bool{a.Tone != 0, a.In != "", a.Speech, a.Mic} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return opts, fmt.Errorf("%w: choose one of --tone, --in, --speech, --mic", ErrBadAudio)
	}
	if a.Out != "" && a.Speaker {
		return opts, fmt.Errorf("%w: choose one of --out, --speaker", ErrBadAudio)
	}
	for _, p := range []string{a.In, a.Out, a.Record} {
		if p != "" && !filepath.IsAbs(p) {
			return opts, fmt.Errorf("%w: path %q must be absolute", ErrBadAudio, p)
		}
	}
	switch {
	case a.Tone != 0:
		if a.Tone < 20 || a.Tone > 20000 {
			return opts, fmt.Errorf("%w: tone %g Hz outside 20-20000", ErrBadAudio, a.Tone)
		}
		if opts.Source, err = media.ToneSource(a.Tone, 0.5); err != nil {
			return opts, err
		}
	case a.In != "":
		w, err := media.OpenWAVSource(a.In)
		if err != nil {
			return opts, fmt.Errorf("%w: %v", ErrBadAudio, err)
		}
		opts.Source, opts.Closers = w, append(opts.Closers, w)
	case a.Speech:
		opts.Source = media.SpeechLikeSource(1)
	case a.Mic:
		m, err := media.OpenMicrophone()
		if err != nil {
			return opts, err
		}
		opts.Source, opts.Closers = m, append(opts.Closers, m)
	}
	switch {
	case a.Out != "":
		w, err := media.CreateWAVSink(a.Out)
		if err != nil {
			return opts, fmt.Errorf("%w: %v", ErrBadAudio, err)
		}
		opts.Sink, opts.Closers = w, append(opts.Closers, w)
	case a.Speaker:
		s, err := media.OpenSpeaker()
		if err != nil {
			return opts, err
		}
		opts.Sink, opts.Closers = s, append(opts.Closers, s)
	}
	if a.Record != "" {
		f, err := os.Create(a.Record)
		if err != nil {
			return opts, fmt.Errorf("%w: %v", ErrBadAudio, err)
		}
		// The recording is finished (end-of-stream page) when the session
		// closes, before Closers run, so the file is complete once closed.
		opts.Recorder, opts.Closers = f, append(opts.Closers, syncCloser{f})
	}
	return opts, nil
}

type syncCloser struct{ f *os.File }

func (s syncCloser) Close() error {
	return errors.Join(s.f.Sync(), s.f.Close())
}

var _ io.Closer = syncCloser{}
