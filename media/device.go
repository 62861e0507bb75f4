package media

import "errors"

// ErrNoAudioDevice is returned by OpenMicrophone and OpenSpeaker in builds
// without audio device support, and when no device can be opened.
var ErrNoAudioDevice = errors.New("media: microphone/speaker support is not built in; rebuild with -tags malgo (needs cgo)")
