package media

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/pion/webrtc/v4"
)

// Audio redundancy (RED, RFC 2198) as browsers send it for Opus: SDP
// "a=rtpmap:63 red/48000/2" with "a=fmtp:63 111/111" (the Opus payload type
// once per block the sender may put in a packet), offered after Opus so a
// peer that does not know RED simply leaves it out of its answer and gets
// plain Opus. When both sides have it, every packet carries, before the
// new (primary) frame, the previous one or two frames again:
//
//	 0                   1                   2                   3
//	|F|  block PT   |  timestamp offset         |   block length    |  one per redundant block, F=1
//	|0|  block PT   |                                                 the primary's header, F=0
//	| redundant blocks, oldest first ... | primary block |
//
// The timestamp offset (14 bits, samples) says how much earlier the block's
// frame was; the block length is 10 bits, so a redundant frame is at most
// 1023 bytes. A lost packet's frame is then rebuilt at full quality from the
// next packet (or the one after), where Opus in-band FEC only gives a
// low-bitrate copy, and only of active speech.

const (
	// redPayloadType is the dynamic payload type we offer for RED, the one
	// Chrome uses.
	redPayloadType = 63
	// maxREDDistance is the most redundant frames we put in a packet.
	maxREDDistance = 2
	// maxREDBlocks bounds the blocks a received RED packet may carry
	// (browsers send at most 3); more is treated as malformed.
	maxREDBlocks = 8
	// Field limits of a RED block header (RFC 2198 §3).
	maxREDOffset      = 1<<14 - 1
	maxREDBlockLength = 1<<10 - 1
)

// ErrBadRED is returned for a RED payload that does not parse.
var ErrBadRED = errors.New("media: malformed RED payload")

// redCapability is RED for Opus at payload type opusPT, as Chrome offers it.
func redCapability(opusPT webrtc.PayloadType) webrtc.RTPCodecCapability {
	pt := strconv.Itoa(int(opusPT))
	return webrtc.RTPCodecCapability{
		MimeType:    mimeTypeRED,
		ClockRate:   SampleRate,
		Channels:    2,
		SDPFmtpLine: pt + "/" + pt,
	}
}

// mimeTypeRED is RED's MIME type as pion spells codecs.
const mimeTypeRED = "audio/red"

// redBlock is one block of a RED payload.
type redBlock struct {
	pt       uint8
	tsOffset uint32 // samples before the packet's timestamp; 0 for the primary
	data     []byte // aliases the payload
}

// redPacket is a parsed RED payload: its redundant blocks, oldest first,
// and the primary block.
type redPacket struct {
	redundant [maxREDBlocks - 1]redBlock
	n         int // redundant blocks in use
	primary   redBlock
}

// parseRED parses a RED payload (RFC 2198 §3) into p without allocating;
// the blocks alias payload. It never panics, and rejects a payload whose
// headers claim more bytes than it has, more than maxREDBlocks blocks, or
// redundant blocks whose offsets do not go forward in time.
func parseRED(payload []byte, p *redPacket) error {
	p.n = 0
	off := 0
	total := 0
	var lengths [maxREDBlocks - 1]int
	for {
		if off >= len(payload) {
			return fmt.Errorf("%w: header runs past the end (%d bytes)", ErrBadRED, len(payload))
		}
		b := payload[off]
		if b&0x80 == 0 { // final header: the primary
			p.primary = redBlock{pt: b & 0x7f}
			off++
			break
		}
		if p.n == len(p.redundant) {
			return fmt.Errorf("%w: more than %d blocks", ErrBadRED, maxREDBlocks)
		}
		if off+4 > len(payload) {
			return fmt.Errorf("%w: block header runs past the end", ErrBadRED)
		}
		h := uint32(payload[off+1])<<16 | uint32(payload[off+2])<<8 | uint32(payload[off+3])
		blk := redBlock{pt: b & 0x7f, tsOffset: h >> 10}
		length := int(h & 0x3ff)
		if blk.tsOffset == 0 || (p.n > 0 && blk.tsOffset >= p.redundant[p.n-1].tsOffset) {
			return fmt.Errorf("%w: block %d has timestamp offset %d after an earlier block", ErrBadRED, p.n, blk.tsOffset)
		}
		lengths[p.n] = length
		p.redundant[p.n] = blk
		p.n++
		total += length
		off += 4
	}
	if off+total > len(payload) {
		return fmt.Errorf("%w: blocks of %d bytes in a %d-byte payload", ErrBadRED, total, len(payload)-off)
	}
	for i := range p.n {
		l := lengths[i]
		p.redundant[i].data = payload[off : off+l : off+l]
		off += l
	}
	p.primary.data = payload[off:]
	return nil
}

// appendRED appends to dst a RED payload of the redundant blocks (oldest
// first) and the primary, all of payload type pt. The caller ensures the
// blocks fit the header fields (redHistory does).
func appendRED(dst []byte, pt uint8, redundant []redBlock, primary []byte) []byte {
	for _, b := range redundant {
		h := b.tsOffset<<10 | uint32(len(b.data))
		dst = append(dst, 0x80|pt, byte(h>>16), byte(h>>8), byte(h))
	}
	dst = append(dst, pt&0x7f)
	for _, b := range redundant {
		dst = append(dst, b.data...)
	}
	return append(dst, primary...)
}

// redHistory keeps the last maxREDDistance frames sent, for the sender to
// repeat. It is owned by the send loop.
type redHistory struct {
	frames [maxREDDistance]struct {
		ts   uint32
		seq  uint16
		data []byte
		ok   bool
	}
	next   int
	blocks [maxREDDistance]redBlock // scratch for blocksFor
}

// blocksFor returns up to distance previous frames to send with the packet
// of sequence number seq and timestamp ts, oldest first: only the frames
// of the packets just before it (so the receiver can tell their sequence
// numbers), and only those the RED header can describe.
func (h *redHistory) blocksFor(seq uint16, ts uint32, distance int) []redBlock {
	out := h.blocks[:0]
	for back := min(distance, maxREDDistance); back >= 1; back-- {
		f := &h.frames[(h.next-back+2*maxREDDistance)%maxREDDistance]
		off := ts - f.ts
		if !f.ok || f.seq != seq-uint16(back) || off == 0 || off > maxREDOffset || len(f.data) > maxREDBlockLength {
			continue
		}
		out = append(out, redBlock{tsOffset: off, data: f.data})
	}
	return out
}

// add remembers a frame just sent.
func (h *redHistory) add(seq uint16, ts uint32, data []byte) {
	f := &h.frames[h.next]
	f.seq, f.ts, f.ok = seq, ts, true
	f.data = append(f.data[:0], data...)
	h.next = (h.next + 1) % maxREDDistance
}

// redPolicy chooses how many redundant frames to send from the loss the
// peer reports in RTCP receiver reports (RFC 3550 §6.4.1 fraction lost,
// about once a second): two as soon as a report shows 3 % or more, at
// least one at 0.5 % or more, and one fewer after redCalmReports reports in
// a row below 0.5 %. Before any report it sends two: the loss is not
// known yet, and the first seconds of a call are when a listener notices
// a gap most. It also
// gives the loss, smoothed, that the Opus encoder should provision in-band
// FEC for.
type redPolicy struct {
	mu       sync.Mutex // guards the fields below
	distance int
	floor    int // the least distance used, 0 or 1
	calm     int
	loss     float64 // smoothed reported loss, percent
}

// redCalmReports is how many loss-free reports in a row lower the
// redundancy by one frame.
const redCalmReports = 5

func newREDPolicy(floor int) *redPolicy {
	return &redPolicy{distance: maxREDDistance, floor: floor}
}

// report takes the fraction lost (percent) from one receiver report.
func (p *redPolicy) report(lossPct float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loss += (lossPct - p.loss) / 4
	switch {
	case lossPct >= 3:
		p.distance, p.calm = maxREDDistance, 0
	case lossPct >= 0.5:
		p.distance, p.calm = max(p.distance, 1), 0
	default:
		if p.calm++; p.calm >= redCalmReports {
			p.distance, p.calm = max(p.floor, p.distance-1), 0
		}
	}
}

// state returns the redundant frames to send and the loss to provision
// FEC for, in whole percent.
func (p *redPolicy) state() (distance, lossPct int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.distance, int(p.loss + 0.5)
}

// isRED reports whether c is RED protecting the Opus payload type opusPT
// only: its fmtp lists opusPT for every block ("111/111", RFC 2198 §5).
func isRED(c webrtc.RTPCodecParameters, opusPT webrtc.PayloadType) bool {
	if !strings.EqualFold(c.MimeType, mimeTypeRED) {
		return false
	}
	pts := strings.Split(strings.TrimSpace(c.SDPFmtpLine), "/")
	for _, s := range pts {
		if n, err := strconv.Atoi(s); err != nil || n != int(opusPT) {
			return false
		}
	}
	return len(pts) > 0
}

// payloadTypes finds the Opus payload type among negotiated codecs, and
// that of RED for it (0 if RED was not negotiated).
func payloadTypes(codecs []webrtc.RTPCodecParameters) (opus, red webrtc.PayloadType, ok bool) {
	for _, c := range codecs {
		if strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus) {
			opus, ok = c.PayloadType, true
			break
		}
	}
	if !ok {
		return 0, 0, false
	}
	for _, c := range codecs {
		if isRED(c, opus) {
			return opus, c.PayloadType, true
		}
	}
	return opus, 0, true
}
