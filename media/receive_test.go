package media

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// FuzzReceive drives the receive path as the track reader and playout loop
// do (RTP parse, jitter buffer, Opus decode or concealment) with packets
// and timing from the fuzzer. Input: records of [2-byte length][1-byte
// arrival delay in ms][length bytes of RTP]. It must never panic, and the
// buffer must stay within its bounds.
func FuzzReceive(f *testing.F) {
	enc, err := newEncoder(32000, true, false, 10)
	if err != nil {
		f.Fatal(err)
	}
	src := SpeechLikeSource(1)
	frame := make([]int16, FrameSamples)
	var seed []byte
	buf := make([]byte, maxOpusPacket)
	for i := range 12 {
		if err := src.ReadFrame(frame); err != nil {
			f.Fatal(err)
		}
		n, err := enc.encode(frame, buf)
		if err != nil {
			f.Fatal(err)
		}
		if i == 5 { // lost
			continue
		}
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * FrameSamples)}, Payload: buf[:n]}
		raw, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(raw)))
		seed = append(seed, 20)
		seed = append(seed, raw...)
	}
	f.Add(seed)
	f.Add([]byte{0, 13, 5, 0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xfc})
	// The same stream as RED with one redundant frame, packet 5 lost.
	seed = nil
	var prev []byte
	for i := range 12 {
		if err := src.ReadFrame(frame); err != nil {
			f.Fatal(err)
		}
		n, err := enc.encode(frame, buf)
		if err != nil {
			f.Fatal(err)
		}
		var blocks []redBlock
		if prev != nil {
			blocks = []redBlock{{tsOffset: FrameSamples, data: prev}}
		}
		payload := appendRED(nil, 111, blocks, buf[:n])
		prev = append([]byte(nil), buf[:n]...)
		if i == 5 {
			continue
		}
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: redPayloadType, SequenceNumber: uint16(i), Timestamp: uint32(i * FrameSamples)}, Payload: payload}
		raw, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(raw)))
		seed = append(seed, 20)
		seed = append(seed, raw...)
	}
	f.Add(seed)

	f.Fuzz(func(t *testing.T, data []byte) {
		dec, err := newDecoder()
		if err != nil {
			t.Fatal(err)
		}
		s := &Session{
			log:        slog.New(slog.DiscardHandler),
			firstAudio: make(chan struct{}),
			rx:         newReceiver(defaultJitterConfig(), dec),
		}
		s.rx.jb.cfg.fec = true
		pl := player{fifo: make([]int16, 0, maxDecodeSamples+FrameSamples), sink: DiscardSink()}
		now := time.Unix(0, 0)
		var p rtp.Packet
		var red redPacket
		for len(data) >= 3 {
			n := int(binary.BigEndian.Uint16(data))
			delay := time.Duration(data[2]) * time.Millisecond
			data = data[3:]
			n = min(n, len(data))
			if err := p.Unmarshal(data[:n]); err == nil {
				s.rx.receive(&p, &red, opusPayloadType, redPayloadType, now)
			}
			data = data[n:]
			for next := now.Add(delay); !now.After(next); now = now.Add(FrameDuration) {
				s.playFrame(&pl, now)
			}
			if l := len(s.rx.jb.pkts); l > jitterCapacity {
				t.Fatalf("%d packets buffered", l)
			}
		}
		for range 5 {
			now = now.Add(FrameDuration)
			s.playFrame(&pl, now)
		}
		if len(pl.fifo) > cap(pl.fifo) || len(pl.fifo) >= FrameSamples+maxDecodeSamples {
			t.Fatalf("playout FIFO holds %d samples", len(pl.fifo))
		}
	})
}
