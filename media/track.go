package media

import (
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// audioTrack is our outgoing Opus track. Unlike pion's TrackLocalStaticRTP
// it sends two payload types on one stream, Opus and (when the peer
// negotiated it) RED carrying Opus, and writes each packet without copying
// its header.
type audioTrack struct {
	codec webrtc.RTPCodecCapability

	mu sync.Mutex // guards b
	b  *trackBinding
}

// trackBinding is where a bound track writes, with the payload types the
// peer agreed to.
type trackBinding struct {
	id            string
	ssrc          webrtc.SSRC
	opusPT, redPT uint8 // redPT is 0 when RED was not negotiated
	w             webrtc.TrackLocalWriter
}

func newAudioTrack(codec webrtc.RTPCodecCapability) *audioTrack {
	return &audioTrack{codec: codec}
}

// Bind implements webrtc.TrackLocal: it finds the negotiated Opus payload
// type and, if the peer took it, RED's.
func (t *audioTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codecs := ctx.CodecParameters()
	opus, red, ok := payloadTypes(codecs)
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	var params webrtc.RTPCodecParameters
	for _, c := range codecs {
		if c.PayloadType == opus {
			params = c
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = &trackBinding{id: ctx.ID(), ssrc: ctx.SSRC(), opusPT: uint8(opus), redPT: uint8(red), w: ctx.WriteStream()}
	return params, nil
}

// Unbind implements webrtc.TrackLocal.
func (t *audioTrack) Unbind(ctx webrtc.TrackLocalContext) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.b != nil && t.b.id == ctx.ID() {
		t.b = nil
	}
	return nil
}

// ID implements webrtc.TrackLocal.
func (t *audioTrack) ID() string { return "audio" }

// RID implements webrtc.TrackLocal.
func (t *audioTrack) RID() string { return "" }

// StreamID implements webrtc.TrackLocal.
func (t *audioTrack) StreamID() string { return "parley" }

// Kind implements webrtc.TrackLocal.
func (t *audioTrack) Kind() webrtc.RTPCodecType {
	if strings.HasPrefix(t.codec.MimeType, "audio/") {
		return webrtc.RTPCodecTypeAudio
	}
	return webrtc.RTPCodecTypeVideo
}

// binding returns the current binding, nil before the call is negotiated.
func (t *audioTrack) binding() *trackBinding {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b
}

// write sends one packet: h's SSRC is set here, its payload type must be
// the binding's opusPT or redPT.
func (b *trackBinding) write(h *rtp.Header, payload []byte) error {
	h.SSRC = uint32(b.ssrc)
	_, err := b.w.WriteRTP(h, payload)
	if errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return err
}
