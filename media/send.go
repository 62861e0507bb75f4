package media

import (
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// sender is the send half of mediaLoop's state.
type sender struct {
	frame     []int16
	buf       []byte // the encoded frame
	redBuf    []byte // the RED payload built around it
	hist      redHistory
	hdr       rtp.Header
	fecLoss   int // the loss the encoder provisions FEC for
	start     time.Time
	frames    int64 // frames handled so far
	srcDone   bool
	talkspurt bool // the next packet sent starts a talkspurt
}

func (s *Session) newSender() *sender {
	s.log.Debug("sending audio", "bitrate", s.cfg.Bitrate, "fec", s.cfg.FEC, "dtx", s.cfg.DTX)
	return &sender{
		frame:  make([]int16, FrameSamples),
		buf:    make([]byte, maxOpusPacket),
		redBuf: make([]byte, 0, 1+(maxREDDistance+1)*(4+maxOpusPacket)),
		hdr: rtp.Header{
			Version:        2,
			SequenceNumber: uint16(rand.Uint32()),
			Timestamp:      rand.Uint32(),
		},
		fecLoss:   s.cfg.ExpectedLoss,
		start:     s.cfg.Now(),
		talkspurt: true,
	}
}

// sendDue reads, encodes and sends every frame due by now. Sending is
// paced by absolute time from its start, so a late tick is made up for and
// the RTP timestamps (RFC 3550 §5.1) stay on the wall clock; the first
// frame goes out at once, since the peer is waiting for it.
func (s *Session) sendDue(sn *sender, now time.Time) {
	src := s.cfg.Source
	due := int64(now.Sub(sn.start)/FrameDuration) + 1
	if lag := due - sn.frames; lag > maxCatchUp {
		skip := lag - maxCatchUp
		// The skipped frames' audio is lost, as a live microphone's would
		// be: read it from the source and drop it, so what follows stays
		// on the wall clock the RTP timestamps follow.
		for i := int64(0); i < skip && !sn.srcDone; i++ {
			if err := src.ReadFrame(sn.frame); err != nil {
				sn.srcDone = true
			}
		}
		sn.frames += skip
		sn.hdr.Timestamp += uint32(skip * FrameSamples)
		s.sent.skipped.Add(uint64(skip))
		sn.talkspurt = true
	}
	if sn.frames >= due {
		return
	}
	distance, reported := s.red.state()
	if s.cfg.FEC && max(reported, s.cfg.ExpectedLoss) != sn.fecLoss {
		// Provision LBRR for the loss the peer reports, never less than
		// configured.
		sn.fecLoss = max(reported, s.cfg.ExpectedLoss)
		s.enc.setPacketLoss(sn.fecLoss)
	}
	for ; sn.frames < due; sn.frames++ {
		if !sn.srcDone {
			if err := src.ReadFrame(sn.frame); err != nil {
				if !errors.Is(err, io.EOF) {
					s.log.Warn("audio source failed; sending silence", "err", err)
				}
				sn.srcDone = true
			}
		}
		if sn.srcDone {
			clear(sn.frame)
		}
		n, err := s.enc.encode(sn.frame, sn.buf)
		if err != nil {
			s.log.Error("opus encode failed", "err", err)
			n = 0
		}
		if n == 0 || (s.cfg.DTX && n <= 2) {
			// Nothing to send (DTX silence); time still passes.
			sn.hdr.Timestamp += FrameSamples
			sn.talkspurt = true
			continue
		}
		sn.hdr.Marker = sn.talkspurt // RFC 3551 §4.1: first packet of a talkspurt
		s.sendFrame(&sn.hdr, sn.buf[:n], &sn.hist, distance, &sn.redBuf)
		sn.talkspurt = false
		sn.hdr.SequenceNumber++
		sn.hdr.Timestamp += FrameSamples
	}
}

// sendFrame sends one Opus frame with the header h: wrapped in RED with
// up to distance earlier frames from hist when the peer negotiated RED,
// plain Opus otherwise. Before the call is negotiated nothing is sent,
// but the frame is counted and remembered all the same.
func (s *Session) sendFrame(h *rtp.Header, opus []byte, hist *redHistory, distance int, redBuf *[]byte) {
	if b := s.track.binding(); b != nil {
		payload := opus
		h.PayloadType = b.opusPT
		if b.redPT != 0 && distance > 0 {
			blocks := hist.blocksFor(h.SequenceNumber, h.Timestamp, distance)
			*redBuf = appendRED((*redBuf)[:0], b.opusPT, blocks, opus)
			payload, h.PayloadType = *redBuf, b.redPT
			s.sent.redundant.Add(uint64(len(blocks)))
		}
		if err := b.write(h, payload); err != nil {
			s.log.Debug("write RTP", "err", err)
		}
		if s.sent.ssrc.Load() == 0 {
			s.sent.ssrc.Store(uint32(b.ssrc))
		}
	}
	hist.add(h.SequenceNumber, h.Timestamp, opus)
	s.sent.packets.Add(1)
	s.sent.bytes.Add(uint64(len(opus)))
}

// rtcpRTT derives the round-trip time from RTCP receiver reports about our
// stream (RFC 3550 §6.4.1): RTT = A − LSR − DLSR, in units of 1/65536 s,
// where A is the arrival time in the middle 32 bits of NTP. It needs the
// session clock to be the wall clock, like the sender reports pion sends.
type rtcpRTT struct {
	mu  sync.Mutex
	rtt time.Duration
	// Fraction lost and jitter the peer reports for what we send.
	remoteLoss   float64
	remoteJitter time.Duration
	ok           bool
}

// It returns the fraction lost (percent) of the last report about ssrc, and
// whether there was one.
func (r *rtcpRTT) observe(pkts []rtcp.Packet, ssrc uint32, now time.Time) (lossPct float64, ok bool) {
	for _, p := range pkts {
		var reports []rtcp.ReceptionReport
		if rr, isRR := p.(*rtcp.ReceiverReport); isRR {
			reports = rr.Reports
		} else if sr, isSR := p.(*rtcp.SenderReport); isSR {
			reports = sr.Reports
		}
		for _, rep := range reports {
			if ssrc != 0 && rep.SSRC != ssrc {
				continue
			}
			r.mu.Lock()
			r.remoteLoss = float64(rep.FractionLost) * 100 / 256
			lossPct, ok = r.remoteLoss, true
			r.remoteJitter = samplesDuration(int64(rep.Jitter))
			if rep.LastSenderReport != 0 {
				a := ntpMiddle(now)
				rtt := a - rep.LastSenderReport - rep.Delay
				// A negative result (clock error) wraps; ignore it.
				if int32(rtt) >= 0 {
					r.rtt = time.Duration(uint64(rtt) * uint64(time.Second) >> 16)
					r.ok = true
				}
			}
			r.mu.Unlock()
		}
	}
	return lossPct, ok
}

func (r *rtcpRTT) get() (rtt time.Duration, ok bool, remoteLoss float64, remoteJitter time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rtt, r.ok, r.remoteLoss, r.remoteJitter
}

// ntpMiddle returns the middle 32 bits of the 64-bit NTP timestamp of t.
func ntpMiddle(t time.Time) uint32 {
	const ntpEpochOffset = 2208988800 // seconds from 1900 to 1970
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return uint32(secs<<16 | frac>>16)
}
