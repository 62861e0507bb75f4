//go:build !malgo

package media

// Microphone and speaker support needs cgo (miniaudio through malgo) and is
// left out of the default build.

// OpenMicrophone would open the default capture device; this build has no
// audio device support and returns ErrNoAudioDevice.
func OpenMicrophone() (*Microphone, error) { return nil, ErrNoAudioDevice }

// OpenSpeaker would open the default playback device; this build has no
// audio device support and returns ErrNoAudioDevice.
func OpenSpeaker() (*Speaker, error) { return nil, ErrNoAudioDevice }

// Microphone is a Source reading the default capture device. In this build
// it cannot be opened.
type Microphone struct{}

// ReadFrame implements Source.
func (*Microphone) ReadFrame([]int16) error { return ErrNoAudioDevice }

// Close implements io.Closer.
func (*Microphone) Close() error { return nil }

// Speaker is a Sink playing to the default playback device. In this build it
// cannot be opened.
type Speaker struct{}

// WriteFrame implements Sink.
func (*Speaker) WriteFrame([]int16) error { return ErrNoAudioDevice }

// Close implements io.Closer.
func (*Speaker) Close() error { return nil }
