package media

import (
	"fmt"
	"time"

	"github.com/thesyncim/gopus"
)

// Audio format used everywhere in this package (DESIGN.md "Calls" §5).
const (
	// SampleRate is the PCM sample rate of sources, sinks and the Opus
	// codec, in Hz.
	SampleRate = 48000
	// FrameSamples is the number of mono samples in one 20 ms frame.
	FrameSamples = SampleRate / 50
	// FrameDuration is the duration of one frame.
	FrameDuration = 20 * time.Millisecond

	// maxOpusPacket bounds an Opus packet we send or accept (RFC 6716 §3.4
	// R2 allows 1275 bytes per frame; a 20 ms voice frame is far smaller).
	maxOpusPacket = 1500
	// maxDecodeSamples is the longest packet duration Opus allows (120 ms).
	maxDecodeSamples = 6 * FrameSamples
)

// encoder wraps a gopus encoder configured for voice.
type encoder struct {
	enc *gopus.Encoder
	pcm []float32
	dtx bool
}

func newEncoder(bitrate int, fec, dtx bool, lossPercent int) (*encoder, error) {
	enc, err := gopus.NewEncoder(gopus.EncoderConfig{
		SampleRate:  SampleRate,
		Channels:    1,
		Application: gopus.ApplicationVoIP,
	})
	if err != nil {
		return nil, fmt.Errorf("media: new opus encoder: %w", err)
	}
	if err := enc.SetBitrate(bitrate); err != nil {
		return nil, fmt.Errorf("media: opus bitrate %d: %w", bitrate, err)
	}
	if err := enc.SetSignal(gopus.SignalVoice); err != nil {
		return nil, fmt.Errorf("media: opus signal: %w", err)
	}
	if fec {
		if err := enc.SetInBandFEC(gopus.InBandFECEnabled); err != nil {
			return nil, fmt.Errorf("media: opus in-band FEC: %w", err)
		}
		// The encoder only spends bits on LBRR when it expects loss.
		if err := enc.SetPacketLoss(lossPercent); err != nil {
			return nil, fmt.Errorf("media: opus packet loss %d%%: %w", lossPercent, err)
		}
	}
	enc.SetDTX(dtx)
	return &encoder{enc: enc, pcm: make([]float32, FrameSamples), dtx: dtx}, nil
}

// setPacketLoss sets the loss, in percent, the encoder provisions in-band
// FEC for; it is only called with FEC on.
func (e *encoder) setPacketLoss(pct int) {
	_ = e.enc.SetPacketLoss(min(max(pct, 0), 100)) // errors only out of range
}

// encode encodes one frame into out and returns the packet length. With DTX
// on, packets of at most 2 bytes mean "nothing worth sending" (RFC 7587
// §3.1.3); callers skip them.
func (e *encoder) encode(frame []int16, out []byte) (int, error) {
	for i, v := range frame {
		e.pcm[i] = float32(v) / 32768
	}
	return e.enc.Encode(e.pcm, out)
}

// decoder wraps a gopus decoder and converts to int16.
type decoder struct {
	dec *gopus.Decoder
	buf []float32
}

func newDecoder() (*decoder, error) {
	dec, err := gopus.NewDecoder(gopus.DecoderConfig{
		SampleRate:       SampleRate,
		Channels:         1,
		MaxPacketSamples: maxDecodeSamples,
		MaxPacketBytes:   maxOpusPacket,
	})
	if err != nil {
		return nil, fmt.Errorf("media: new opus decoder: %w", err)
	}
	return &decoder{dec: dec, buf: make([]float32, maxDecodeSamples)}, nil
}

// decode decodes packet and appends the PCM to dst.
func (d *decoder) decode(dst []int16, packet []byte) ([]int16, error) {
	n, err := d.dec.Decode(packet, d.buf)
	if err != nil {
		return dst, err
	}
	return appendPCM(dst, d.buf[:n]), nil
}

// conceal runs packet loss concealment for one frame and appends it.
func (d *decoder) conceal(dst []int16) ([]int16, error) {
	n, err := d.dec.Decode(nil, d.buf[:FrameSamples])
	if err != nil {
		return dst, err
	}
	return appendPCM(dst, d.buf[:n]), nil
}

// decodeFEC reconstructs the frame before next from next's in-band FEC
// (LBRR) data, falling back to concealment when next carries none.
func (d *decoder) decodeFEC(dst []int16, next []byte) ([]int16, error) {
	n, err := d.dec.DecodeWithFEC(next, d.buf[:FrameSamples], true)
	if err != nil {
		return dst, err
	}
	return appendPCM(dst, d.buf[:n]), nil
}

func appendPCM(dst []int16, pcm []float32) []int16 {
	for _, v := range pcm {
		dst = append(dst, clamp16(float64(v)*32768))
	}
	return dst
}

// packetSamples returns the duration in 48 kHz samples of an Opus packet
// from its TOC byte and frame count (RFC 6716 §3.1), or 0 if malformed.
func packetSamples(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	toc := p[0]
	var perFrame int
	config := toc >> 3
	switch {
	case config < 12: // SILK 10/20/40/60 ms
		perFrame = []int{480, 960, 1920, 2880}[config&3]
	case config < 16: // Hybrid 10/20 ms
		perFrame = []int{480, 960}[config&1]
	default: // CELT 2.5/5/10/20 ms
		perFrame = []int{120, 240, 480, 960}[config&3]
	}
	var frames int
	switch toc & 3 {
	case 0:
		frames = 1
	case 1, 2:
		frames = 2
	case 3:
		if len(p) < 2 {
			return 0
		}
		frames = int(p[1] & 0x3f)
	}
	n := perFrame * frames
	if n == 0 || n > maxDecodeSamples {
		return 0
	}
	return n
}

// lostFrame returns a 1-byte code-0 Opus packet for 20 ms in the mode,
// bandwidth and channel count of p: a zero-length frame, which decoders
// treat as lost and conceal (RFC 6716 §3.2.1). It keeps a recording's
// timeline intact across lost and concealed frames.
func lostFrame(p []byte) []byte {
	if len(p) == 0 {
		return []byte{(1<<3 | 1) << 3} // SILK wideband 20 ms mono
	}
	config := p[0] >> 3
	switch {
	case config < 12: // SILK: frame size in the low two bits, 20 ms = 1
		config = config&^3 | 1
	case config < 16: // Hybrid: low bit, 20 ms = 1
		config |= 1
	default: // CELT: low two bits, 20 ms = 3
		config |= 3
	}
	return []byte{config<<3 | p[0]&0x04}
}
