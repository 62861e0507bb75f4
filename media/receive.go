package media

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// maxRTPPacket bounds a received RTP packet (pion's receive MTU is 1460).
const maxRTPPacket = 1500

// maxLoggedDecodeErrors limits how many decode failures are logged per call.
const maxLoggedDecodeErrors = 5

// receiver holds the receive-side state shared by the track reader and the
// playout loop.
type receiver struct {
	mu sync.Mutex
	jb *jitterBuffer

	packets, bytes  uint64
	malformed       uint64        // RTP that did not parse or had a foreign payload type
	playoutSkipped  atomic.Uint64 // playout frames skipped because playout fell behind
	decodeErrors    uint64
	winStart        time.Time
	winBytes        int64
	bitrate         float64 // bit/s over the last complete second
	firstPacketTime time.Time

	dec *decoder // used by the playout goroutine only
}

func newReceiver(cfg jitterConfig, dec *decoder) *receiver {
	return &receiver{jb: newJitterBuffer(cfg), dec: dec}
}

func (r *receiver) push(p *rtp.Packet, now time.Time) pushResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count(len(p.Payload), now)
	return r.jb.push(p.SequenceNumber, p.Timestamp, p.Payload, now)
}

// pushRED takes a RED packet (RFC 2198) whose payload red holds, parsed:
// its primary Opus frame as the packet's own, then each redundant Opus
// frame as that of the packet as many places before it, to fill a slot
// the network lost. Blocks of other payload types are ignored.
func (r *receiver) pushRED(p *rtp.Packet, red *redPacket, opusPT uint8, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count(len(p.Payload), now)
	if red.primary.pt == opusPT && len(red.primary.data) > 0 {
		r.jb.push(p.SequenceNumber, p.Timestamp, red.primary.data, now)
	}
	for i, b := range red.redundant[:red.n] {
		if b.pt == opusPT {
			r.jb.pushRedundant(p.SequenceNumber-uint16(red.n-i), p.Timestamp-b.tsOffset, b.data, now)
		}
	}
}

// count books a received packet of n payload bytes; r.mu is held.
func (r *receiver) count(n int, now time.Time) {
	r.packets++
	r.bytes += uint64(n)
	if r.winStart.IsZero() {
		r.winStart, r.firstPacketTime = now, now
	}
	r.winBytes += int64(n)
	if el := now.Sub(r.winStart); el >= time.Second {
		r.bitrate = float64(r.winBytes*8) / el.Seconds()
		r.winStart, r.winBytes = now, 0
	}
}

func (r *receiver) pop(now time.Time) (playKind, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jb.pop(now)
}

func (r *receiver) countMalformed() {
	r.mu.Lock()
	r.malformed++
	r.mu.Unlock()
}

func (r *receiver) countDecodeError() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decodeErrors++
	return r.decodeErrors
}

// handleTrack runs on a goroutine pion starts for the peer's track; it
// becomes the track's reader.
func (s *Session) handleTrack(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	opusPT, redPT, ok := payloadTypes(recv.GetParameters().Codecs)
	if tr.Kind() != webrtc.RTPCodecTypeAudio || !ok {
		s.mu.Unlock()
		s.log.Warn("ignoring non-Opus track", "kind", tr.Kind(), "codec", tr.Codec().MimeType)
		return
	}
	if s.readingTrack {
		// One audio stream per call: a second one would fight the first
		// over the jitter buffer.
		s.mu.Unlock()
		s.log.Warn("ignoring second audio track", "ssrc", tr.SSRC())
		return
	}
	s.readingTrack = true
	s.wg.Add(2)
	if !s.playStarted {
		s.playStarted = true
		s.startMedia(&s.playOn)
	}
	s.mu.Unlock()

	s.log.Debug("receiving audio", "ssrc", tr.SSRC(), "payload_type", tr.PayloadType())
	go s.readReceiverRTCP(recv)
	defer s.wg.Done()
	s.readTrack(tr, uint8(opusPT), uint8(redPT))
	s.mu.Lock()
	s.readingTrack = false
	s.mu.Unlock()
}

// readTrack reads the peer's packets: Opus of payload type opusPT and,
// when redPT is not 0, RED carrying Opus.
func (s *Session) readTrack(tr *webrtc.TrackRemote, opusPT, redPT uint8) {
	buf := make([]byte, maxRTPPacket)
	var p rtp.Packet
	var red redPacket
	for {
		n, _, err := tr.Read(buf)
		if err != nil && !errors.Is(err, webrtc.ErrCodecNotFound) {
			if !errors.Is(err, io.EOF) {
				s.log.Debug("track reader stopped", "err", err)
			}
			return
		}
		if err != nil || p.Unmarshal(buf[:n]) != nil {
			s.rx.countMalformed()
			continue
		}
		s.rx.receive(&p, &red, opusPT, redPT, s.cfg.Now())
	}
}

// receive takes one RTP packet of the peer's stream: Opus of payload type
// opusPT, or RED carrying Opus when redPT is not 0. red is scratch space.
func (r *receiver) receive(p *rtp.Packet, red *redPacket, opusPT, redPT uint8, now time.Time) {
	switch {
	case p.PayloadType == opusPT:
		r.push(p, now)
	case p.PayloadType == redPT && redPT != 0 && parseRED(p.Payload, red) == nil:
		r.pushRED(p, red, opusPT, now)
	default:
		r.countMalformed()
	}
}

// readReceiverRTCP drains RTCP arriving for the peer's stream (sender
// reports), so the report interceptor can answer them.
func (s *Session) readReceiverRTCP(recv *webrtc.RTPReceiver) {
	defer s.wg.Done()
	for {
		if _, _, err := recv.ReadRTCP(); err != nil {
			return
		}
	}
}

// player is the playout goroutine's state.
type player struct {
	fifo      []int16 // decoded samples not yet given to the sink
	sink      Sink
	last      []byte // last packet decoded, for its TOC
	sinkDead  bool
	recording bool
	start     time.Time // when playout started
	frames    int64     // frames played so far
}

func (s *Session) newPlayer() *player {
	return &player{
		fifo:      make([]int16, 0, maxDecodeSamples+FrameSamples),
		sink:      s.cfg.Sink,
		recording: s.ogg != nil,
		start:     s.cfg.Now(),
	}
}

// playDue pulls a frame from the jitter buffer for every 20 ms due by now,
// decodes or conceals it, and feeds the sink and the recorder. Like sending
// it is paced by absolute time from its start.
func (s *Session) playDue(pl *player, now time.Time) {
	due := int64(now.Sub(pl.start)/FrameDuration) + 1
	if lag := due - pl.frames; lag > maxCatchUp {
		pl.frames += lag - maxCatchUp
		s.rx.playoutSkipped.Add(uint64(lag - maxCatchUp))
	}
	for ; pl.frames < due; pl.frames++ {
		s.playFrame(pl, now)
	}
}

func (s *Session) playFrame(pl *player, now time.Time) {
	dec := s.rx.dec
	for len(pl.fifo) < FrameSamples {
		kind, pkt := s.rx.pop(now)
		var err error
		switch kind {
		case playWait:
			return
		case playPacket:
			pl.fifo, err = dec.decode(pl.fifo, pkt)
			if err == nil {
				s.record(pl, pkt)
				pl.last = pkt
				s.firstOnce.Do(func() { close(s.firstAudio) })
			}
		case playFEC:
			pl.fifo, err = dec.decodeFEC(pl.fifo, pkt)
			s.record(pl, lostFrame(pl.last))
		default:
			pl.fifo, err = dec.conceal(pl.fifo)
			s.record(pl, lostFrame(pl.last))
		}
		if err != nil {
			if n := s.rx.countDecodeError(); n <= maxLoggedDecodeErrors {
				s.log.Warn("opus decode failed; concealing", "play", kind, "err", err)
			}
			if pl.fifo, err = dec.conceal(pl.fifo); err != nil {
				pl.fifo = append(pl.fifo, make([]int16, FrameSamples)...)
			}
			if kind == playPacket {
				s.record(pl, lostFrame(pl.last))
			}
		}
	}
	if !pl.sinkDead {
		if err := pl.sink.WriteFrame(pl.fifo[:FrameSamples]); err != nil {
			s.log.Warn("audio sink failed; discarding audio from now on", "err", err)
			pl.sinkDead = true
		}
	}
	n := copy(pl.fifo, pl.fifo[FrameSamples:])
	pl.fifo = pl.fifo[:n]
}

// record appends one packet to the Ogg Opus recording.
func (s *Session) record(pl *player, pkt []byte) {
	if !pl.recording {
		return
	}
	if err := s.ogg.WritePacket(pkt, packetSamples(pkt)); err != nil {
		s.log.Warn("recording failed; stopping it", "err", err)
		pl.recording = false
	}
}
