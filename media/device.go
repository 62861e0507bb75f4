package media

import "errors"

// ErrNoAudioDevice is returned by OpenMicrophone and OpenSpeaker in builds
// without audio device support (the default, pure-Go build).
var ErrNoAudioDevice = errors.New("media: microphone/speaker support is not built in; rebuild with -tags malgo (needs cgo)")

// deviceBufferSamples bounds the audio queued between a device callback and
// a session: 200 ms. Beyond it the oldest audio is dropped, so latency
// cannot grow without bound when one side runs faster than the other.
const deviceBufferSamples = 10 * FrameSamples
