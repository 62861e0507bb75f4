//go:build malgo

package media

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gen2brain/malgo"
)

// Microphone and speaker through miniaudio (github.com/gen2brain/malgo,
// cgo). Both run the device at 48 kHz mono 16-bit; miniaudio converts from
// whatever the hardware does. Device callbacks run on miniaudio's thread
// and only touch a bounded queue guarded by a mutex.

// Microphone is a Source reading the default capture device.
type Microphone struct {
	ctx *malgo.AllocatedContext
	dev *malgo.Device

	mu     sync.Mutex
	queue  []int16
	closed bool
	ready  chan struct{} // signalled when audio is captured or on Close
}

// micStallTimeout is how long ReadFrame waits for the device before it
// returns silence, so a stalled or unplugged device cannot block a call.
const micStallTimeout = 200 * time.Millisecond

// OpenMicrophone opens and starts the default capture device.
func OpenMicrophone() (*Microphone, error) {
	m := &Microphone{ready: make(chan struct{}, 1)}
	ctx, dev, err := openDevice(malgo.Capture, func(_, in []byte, _ uint32) { m.captured(in) })
	if err != nil {
		return nil, fmt.Errorf("media: open microphone: %w", err)
	}
	m.ctx, m.dev = ctx, dev
	return m, nil
}

func (m *Microphone) captured(in []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i+1 < len(in); i += 2 {
		m.queue = append(m.queue, int16(binary.LittleEndian.Uint16(in[i:])))
	}
	if over := len(m.queue) - deviceBufferSamples; over > 0 {
		m.queue = append(m.queue[:0], m.queue[over:]...)
	}
	m.signal()
}

func (m *Microphone) signal() {
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// ReadFrame implements Source. It waits until a frame has been captured,
// returns silence if the device stalls for micStallTimeout, and io.EOF once
// the microphone is closed.
func (m *Microphone) ReadFrame(frame []int16) error {
	if len(frame) != FrameSamples {
		return ErrFrameSize
	}
	timeout := time.NewTimer(micStallTimeout)
	defer timeout.Stop()
	for {
		m.mu.Lock()
		switch {
		case m.closed:
			m.mu.Unlock()
			return io.EOF
		case len(m.queue) >= FrameSamples:
			copy(frame, m.queue)
			m.queue = append(m.queue[:0], m.queue[FrameSamples:]...)
			m.mu.Unlock()
			return nil
		}
		m.mu.Unlock()
		select {
		case <-m.ready:
		case <-timeout.C:
			clear(frame)
			return nil
		}
	}
}

// Close stops the device and releases it.
func (m *Microphone) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.signal()
	return closeDevice(m.ctx, m.dev)
}

// Speaker is a Sink playing to the default playback device. When the
// session falls behind, the device plays silence.
type Speaker struct {
	ctx *malgo.AllocatedContext
	dev *malgo.Device

	mu     sync.Mutex
	queue  []int16
	closed bool
}

// OpenSpeaker opens and starts the default playback device.
func OpenSpeaker() (*Speaker, error) {
	s := &Speaker{}
	ctx, dev, err := openDevice(malgo.Playback, func(out, _ []byte, _ uint32) { s.play(out) })
	if err != nil {
		return nil, fmt.Errorf("media: open speaker: %w", err)
	}
	s.ctx, s.dev = ctx, dev
	return s, nil
}

func (s *Speaker) play(out []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(out)/2, len(s.queue))
	for i := range n {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(s.queue[i]))
	}
	clear(out[2*n:])
	s.queue = append(s.queue[:0], s.queue[n:]...)
}

// WriteFrame implements Sink.
func (s *Speaker) WriteFrame(frame []int16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.queue = append(s.queue, frame...)
	if over := len(s.queue) - deviceBufferSamples; over > 0 {
		s.queue = append(s.queue[:0], s.queue[over:]...)
	}
	return nil
}

// Close stops the device and releases it.
func (s *Speaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return closeDevice(s.ctx, s.dev)
}

func openDevice(kind malgo.DeviceType, data malgo.DataProc) (*malgo.AllocatedContext, *malgo.Device, error) {
	ctx, err := malgo.InitContext(nil, malgo.ContextConfig{}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("init audio context: %w", err)
	}
	cfg := malgo.DefaultDeviceConfig(kind)
	cfg.SampleRate = SampleRate
	cfg.PeriodSizeInMilliseconds = uint32(FrameDuration.Milliseconds())
	if kind == malgo.Capture {
		cfg.Capture.Format = malgo.FormatS16
		cfg.Capture.Channels = 1
	} else {
		cfg.Playback.Format = malgo.FormatS16
		cfg.Playback.Channels = 1
	}
	dev, err := malgo.InitDevice(ctx.Context, cfg, malgo.DeviceCallbacks{Data: data})
	if err != nil {
		_ = ctx.Uninit()
		ctx.Free()
		return nil, nil, fmt.Errorf("init audio device: %w", err)
	}
	if err := dev.Start(); err != nil {
		dev.Uninit()
		_ = ctx.Uninit()
		ctx.Free()
		return nil, nil, fmt.Errorf("start audio device: %w", err)
	}
	return ctx, dev, nil
}

func closeDevice(ctx *malgo.AllocatedContext, dev *malgo.Device) error {
	dev.Uninit()
	err := ctx.Uninit()
	ctx.Free()
	if err != nil {
		return fmt.Errorf("media: release audio context: %w", err)
	}
	return nil
}
