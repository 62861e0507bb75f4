package media

import (
	"math"
	"slices"
	"time"

	"github.com/thesyncim/gopus"
)

// The jitter buffer orders received Opus packets by RTP sequence number and
// hands one playout decision to the decoder for every 20 ms of output. It is
// a pure state machine: arrival and playout times are passed in, so tests
// drive it with a synthetic clock.
//
// Playout follows the RTP timestamps (RFC 3550 §5.1): playTS is the
// timestamp of the next sample to play. When the packet due at playTS is
// missing but a later one is buffered, the slot is lost: it is rebuilt from
// the later packet's in-band FEC when that packet directly follows and
// carries LBRR data (RFC 6716 §2.1.7, §4.2.4), otherwise concealed. When nothing at all is buffered the buffer
// "expands" (conceals without giving up on the packet); if that packet then
// arrives its timestamp tells whether the expansion covered a DTX pause
// (RFC 7587 §3.1.3, counted as comfort noise) or a late packet (counted as
// concealment, and the delay grows by the time it was late).
//
// The target delay adapts: it is one frame plus three times the RFC 3550
// interarrival jitter (less a 2 ms deadband), in whole frames, plus one frame for every recent late packet or
// underrun (decaying one frame per jitterBoostDecay), clamped to
// [minDelay, maxDelay]. When the buffer stays more than a frame above target
// for a whole jitterTrimWindow, or ever holds more than maxDelay, frames are
// dropped from its head to bring the delay back down.

const (
	// jitterCapacity bounds the packets held, whatever their duration.
	jitterCapacity = 64
	// jitterMaxJump is how far (in packets, about a minute) a sequence
	// number may move before the stream is treated as restarted.
	jitterMaxJump = 3000
	// jitterTrimWindow is the number of playout ticks over which the
	// minimum buffer level is measured before trimming excess delay.
	jitterTrimWindow = 50
	// jitterBoostDecay is how long the buffer waits without a late packet
	// before lowering its target by one frame.
	jitterBoostDecay = 10 * time.Second
	// jitterK scales the RFC 3550 jitter estimate into target delay.
	jitterK = 3
	// jitterDeadband is jitter (after scaling) too small to be worth a
	// frame of delay: timer and scheduling noise, 2 ms in samples.
	jitterDeadband = 2 * SampleRate / 1000
)

type jitterConfig struct {
	minDelay, maxDelay, startDelay int  // samples, multiples of FrameSamples
	fec                            bool // rebuild lost frames from the next packet's LBRR
}

type jbPacket struct {
	seq, ts   int64 // extended (unwrapped) sequence number and timestamp
	payload   []byte
	samples   int
	redundant bool // rebuilt from a later packet's RED block
}

// playKind is what the decoder must do for the next slot.
type playKind uint8

const (
	playWait    playKind = iota // nothing to play yet: the buffer is still filling
	playPacket                  // decode payload
	playFEC                     // rebuild a lost frame from payload's in-band FEC
	playConceal                 // a packet is lost: packet loss concealment
	playExpand                  // nothing buffered: conceal while waiting
	playComfort                 // timestamp gap (DTX): comfort noise via concealment
)

func (k playKind) String() string {
	switch k {
	case playWait:
		return "wait"
	case playPacket:
		return "packet"
	case playFEC:
		return "fec"
	case playConceal:
		return "conceal"
	case playExpand:
		return "expand"
	case playComfort:
		return "comfort"
	}
	return "unknown"
}

type pushResult uint8

const (
	pushAccepted pushResult = iota
	pushLate
	pushDuplicate
	pushMalformed
)

// jitterStats are the buffer's counters. Samples are 48 kHz samples.
type jitterStats struct {
	Received  int64 // packets accepted by push (including late and duplicates)
	Expected  int64 // packets the sequence numbers say were sent
	Late      int64 // arrived after their slot was played or given up
	Duplicate int64
	Malformed int64 // not a plausible Opus packet
	Overflow  int64 // dropped because the buffer was full
	Discarded int64 // dropped to reduce delay
	Lost      int64 // slots given up at playout
	Played    int64
	Resets    int64 // stream restarts (sequence number jumps)

	ConcealedSamples int64 // output produced by concealment for loss or lateness
	// MissingSamples is the current open gap, when it is longer than a
	// DTX pause (counted in ConcealedSamples too): the audio that has not
	// come since the last packet.
	MissingSamples int64
	FECSamples     int64 // output rebuilt from in-band FEC
	REDSamples     int64 // output decoded from a frame rebuilt from RED
	// LateRedundant counts RED blocks that came after their slot had
	// been concealed: more delay would have let them help.
	LateRedundant  int64
	ComfortSamples int64 // output produced for DTX pauses

	JitterSamples   float64 // RFC 3550 interarrival jitter
	TargetSamples   int     // current target delay
	BufferedSamples int     // audio buffered ahead of the playout point
}

type jitterBuffer struct {
	cfg  jitterConfig
	pkts []jbPacket // sorted by seq, no duplicates

	haveSeq      bool
	maxSeq       int64
	baseSeq      int64
	lastTS       int64 // extended timestamp of the newest packet
	expectedPrev int64 // packets expected before the last stream reset
	firstArrival time.Time

	epoch       time.Time
	haveTransit bool
	lastTransit float64

	started       bool
	nextSeq       int64
	playTS        int64
	pendingExpand int64

	// concealedSeqs remembers the last slots concealed for a lost packet,
	// so a RED block that comes too late for one raises the delay.
	concealedSeqs [8]int64
	concealedNext int

	boost     int // frames added to the target after late packets
	lastBoost time.Time
	lowWater  int
	lowCount  int

	st jitterStats
}

func newJitterBuffer(cfg jitterConfig) *jitterBuffer {
	j := &jitterBuffer{cfg: cfg, lowWater: math.MaxInt}
	for i := range j.concealedSeqs {
		j.concealedSeqs[i] = -1
	}
	j.boost = max(0, (cfg.startDelay-FrameSamples)/FrameSamples)
	return j
}

// push offers a received packet. payload is copied.
func (j *jitterBuffer) push(seq uint16, ts uint32, payload []byte, now time.Time) pushResult {
	n := packetSamples(payload)
	if n == 0 || len(payload) > maxOpusPacket {
		j.st.Malformed++
		return pushMalformed
	}
	if !j.haveSeq {
		j.resetStream(seq, ts, now)
	}
	ext := j.maxSeq + int64(int16(seq-uint16(j.maxSeq)))
	extTS := j.lastTS + int64(int32(ts-uint32(j.lastTS)))
	if ext > j.maxSeq+jitterMaxJump || ext < j.maxSeq-jitterMaxJump {
		j.st.Resets++
		j.resetStream(seq, ts, now)
		ext, extTS = j.maxSeq, j.lastTS
	}
	if ext > j.maxSeq {
		j.maxSeq = ext
	}
	if ext == j.maxSeq {
		j.lastTS = extTS
	}
	j.st.Received++

	// Interarrival jitter, RFC 3550 §6.4.1 and §A.8, in timestamp units.
	transit := now.Sub(j.epoch).Seconds()*SampleRate - float64(extTS)
	if j.haveTransit {
		d := math.Abs(transit - j.lastTransit)
		j.st.JitterSamples += (d - j.st.JitterSamples) / 16
	}
	j.lastTransit, j.haveTransit = transit, true

	if j.started && ext < j.nextSeq {
		j.st.Late++
		j.raiseTarget(now)
		return pushLate
	}
	i, found := j.find(ext)
	if found {
		if j.pkts[i].redundant {
			// The original came after all (the network reordered it
			// behind the packet carrying its copy): it is the same
			// frame, but count it as received, not rebuilt.
			j.pkts[i].redundant = false
			return pushAccepted
		}
		j.st.Duplicate++
		return pushDuplicate
	}
	j.pkts = slices.Insert(j.pkts, i, jbPacket{
		seq:     ext,
		ts:      extTS,
		payload: append([]byte(nil), payload...),
		samples: n,
	})
	if len(j.pkts) > jitterCapacity {
		j.st.Overflow++
		j.dropHead()
	}
	return pushAccepted
}

// pushRedundant offers a frame rebuilt from a RED block (RFC 2198) of a
// packet just pushed: the frame of sequence number seq and timestamp ts,
// which the network lost or has yet to deliver. It fills the slot if that
// is still to be played and empty, and is ignored otherwise; it does not
// count as a received packet nor feed the jitter estimate. payload is
// copied.
func (j *jitterBuffer) pushRedundant(seq uint16, ts uint32, payload []byte, now time.Time) {
	n := packetSamples(payload)
	if n == 0 || len(payload) > maxOpusPacket || !j.haveSeq {
		return
	}
	ext := j.maxSeq + int64(int16(seq-uint16(j.maxSeq)))
	extTS := j.lastTS + int64(int32(ts-uint32(j.lastTS)))
	if ext > j.maxSeq || ext < j.maxSeq-maxREDBlocks {
		return // a redundant frame is always of an earlier packet
	}
	if j.started && ext < j.nextSeq {
		if slices.Contains(j.concealedSeqs[:], ext) {
			// It would have saved a concealed slot had it come in time.
			j.st.LateRedundant++
			j.raiseTarget(now)
			j.forgetConcealed(ext)
		}
		return
	}
	i, found := j.find(ext)
	if found {
		return
	}
	j.pkts = slices.Insert(j.pkts, i, jbPacket{
		seq:       ext,
		ts:        extTS,
		payload:   append([]byte(nil), payload...),
		samples:   n,
		redundant: true,
	})
	if len(j.pkts) > jitterCapacity {
		j.st.Overflow++
		j.dropHead()
	}
}

// find returns where seq is, or would be inserted, in j.pkts.
func (j *jitterBuffer) find(seq int64) (int, bool) {
	return slices.BinarySearchFunc(j.pkts, seq, func(p jbPacket, s int64) int {
		switch {
		case p.seq < s:
			return -1
		case p.seq > s:
			return 1
		}
		return 0
	})
}

func (j *jitterBuffer) rememberConcealed(seq int64) {
	j.concealedSeqs[j.concealedNext] = seq
	j.concealedNext = (j.concealedNext + 1) % len(j.concealedSeqs)
}

func (j *jitterBuffer) forgetConcealed(seq int64) {
	for i, s := range j.concealedSeqs {
		if s == seq {
			j.concealedSeqs[i] = -1
		}
	}
}

func (j *jitterBuffer) resetStream(seq uint16, ts uint32, now time.Time) {
	if j.haveSeq {
		j.expectedPrev += j.maxSeq - j.baseSeq + 1
	}
	j.haveSeq = true
	j.maxSeq = int64(seq)
	j.baseSeq = j.maxSeq
	j.lastTS = int64(ts)
	j.firstArrival = now
	j.lastBoost = now
	j.epoch = now
	j.haveTransit = false
	j.started = false
	j.pkts = j.pkts[:0]
	j.pendingExpand = 0
	for i := range j.concealedSeqs {
		j.concealedSeqs[i] = -1
	}
}

// dropHead removes the oldest buffered packet; if playout has started the
// playout point moves past it.
func (j *jitterBuffer) dropHead() {
	p := j.pkts[0]
	j.pkts = slices.Delete(j.pkts, 0, 1)
	if !j.started {
		return
	}
	if p.seq > j.nextSeq {
		j.st.Lost += p.seq - j.nextSeq
	}
	if p.seq >= j.nextSeq {
		j.nextSeq = p.seq + 1
		j.playTS = max(j.playTS, p.ts+int64(p.samples))
	}
}

func (j *jitterBuffer) raiseTarget(now time.Time) {
	if j.target() < j.cfg.maxDelay {
		j.boost++
	}
	j.lastBoost = now
}

// target returns the current target delay in samples: one frame, plus
// whole frames for jitterK times the jitter beyond jitterDeadband, plus the
// boost from recent late packets.
func (j *jitterBuffer) target() int {
	extra := max(0, jitterK*j.st.JitterSamples-jitterDeadband)
	frames := 1 + int(math.Ceil(extra/FrameSamples)) + j.boost
	return min(max(frames*FrameSamples, j.cfg.minDelay), j.cfg.maxDelay)
}

// buffered returns how much audio is buffered ahead of the playout point.
func (j *jitterBuffer) buffered() int {
	if len(j.pkts) == 0 {
		return 0
	}
	last := j.pkts[len(j.pkts)-1]
	return int(max(0, last.ts+int64(last.samples)-j.playTS))
}

// pop decides what to play for the next slot. For playPacket and playFEC it
// returns the packet to decode; the buffer never modifies it afterwards.
func (j *jitterBuffer) pop(now time.Time) (playKind, []byte) {
	if j.boost > 0 && now.Sub(j.lastBoost) >= jitterBoostDecay {
		j.boost--
		j.lastBoost = now
	}
	target := j.target()
	if !j.started {
		if len(j.pkts) == 0 {
			return playWait, nil
		}
		head, last := j.pkts[0], j.pkts[len(j.pkts)-1]
		span := last.ts + int64(last.samples) - head.ts
		waited := now.Sub(j.firstArrival)
		if span < int64(target) && waited < time.Duration(target)*time.Second/SampleRate {
			return playWait, nil
		}
		j.started = true
		j.nextSeq, j.playTS = head.seq, head.ts
		j.lastBoost = now
	}
	j.trim(target)

	if len(j.pkts) == 0 {
		j.pendingExpand += FrameSamples
		j.playTS += FrameSamples
		return playExpand, nil
	}
	q := j.pkts[0]
	if q.seq > j.nextSeq {
		if q.ts > j.playTS+FrameSamples/2 {
			// The slot at playTS belongs to a packet that has not come
			// although a later one has: it is lost. Counting back from q
			// in 20 ms frames says which one; earlier missing packets'
			// slots were already covered by expansion.
			owner := q.seq - (q.ts-j.playTS+FrameSamples/2)/FrameSamples
			if owner > j.nextSeq {
				j.st.Lost += owner - j.nextSeq
				j.nextSeq = owner
			}
			j.commitExpand(true)
			j.st.Lost++
			j.nextSeq++
			j.playTS += FrameSamples
			if j.cfg.fec && q.seq == j.nextSeq && q.ts-j.playTS <= FrameSamples/2 && gopus.PacketHasLBRR(q.payload) {
				j.st.FECSamples += FrameSamples
				return playFEC, q.payload
			}
			j.st.ConcealedSamples += FrameSamples
			j.rememberConcealed(j.nextSeq - 1)
			return playConceal, nil
		}
		// Every missing packet's time has passed.
		j.commitExpand(true)
		j.st.Lost += q.seq - j.nextSeq
		j.nextSeq = q.seq
	}

	// q is the packet due next.
	gap := q.ts - j.playTS
	if gap > FrameSamples/2 && gap <= int64(j.cfg.maxDelay+FrameSamples) {
		// A timestamp gap with no sequence gap: the sender paused (DTX).
		j.commitExpand(false)
		j.st.ComfortSamples += FrameSamples
		j.playTS += FrameSamples
		return playComfort, nil
	}
	if late := -gap; late > 0 && j.pendingExpand > 0 {
		c := min(j.pendingExpand, late)
		j.st.ConcealedSamples += c
		j.st.ComfortSamples += j.pendingExpand - c
		j.pendingExpand = 0
		j.raiseTarget(now)
	}
	j.commitExpand(false)
	j.playHead()
	return playPacket, q.payload
}

// playHead takes the head packet out to be played.
func (j *jitterBuffer) playHead() {
	q := j.pkts[0]
	j.pkts = slices.Delete(j.pkts, 0, 1)
	j.nextSeq = q.seq + 1
	j.playTS = q.ts + int64(q.samples)
	j.st.Played++
	if q.redundant {
		j.st.REDSamples += int64(q.samples)
	}
}

// commitExpand books pending expansion as concealment (the awaited packet
// was lost) or comfort noise (the sender was in DTX).
func (j *jitterBuffer) commitExpand(lost bool) {
	if lost {
		j.st.ConcealedSamples += j.pendingExpand
	} else {
		j.st.ComfortSamples += j.pendingExpand
	}
	j.pendingExpand = 0
}

// trim drops frames from the head when the delay has been above target for
// a whole window, or is above maxDelay right now.
func (j *jitterBuffer) trim(target int) {
	b := j.buffered()
	j.lowWater = min(j.lowWater, b)
	j.lowCount++
	excess := 0
	switch {
	case b > j.cfg.maxDelay:
		excess = b - target
	case j.lowCount >= jitterTrimWindow:
		if j.lowWater >= target+FrameSamples {
			excess = j.lowWater - target
		}
		j.lowWater, j.lowCount = math.MaxInt, 0
	}
	for excess >= FrameSamples && len(j.pkts) > 1 {
		p := j.pkts[0]
		j.dropHead()
		j.st.Discarded++
		excess -= p.samples
	}
}

// stats returns a snapshot of the counters.
func (j *jitterBuffer) stats() jitterStats {
	s := j.st
	if j.haveSeq {
		s.Expected = j.expectedPrev + j.maxSeq - j.baseSeq + 1
	}
	s.TargetSamples = j.target()
	s.BufferedSamples = j.buffered()
	if j.pendingExpand > openGapSamples {
		// Audio has not come for longer than any DTX pause: whatever
		// arrives later, this much is missing now, and a call whose
		// media died must not read as healthy.
		s.ConcealedSamples += j.pendingExpand
		s.MissingSamples = j.pendingExpand
	}
	return s
}

// openGapSamples is the longest open gap taken for a DTX pause: an Opus
// encoder in DTX still sends a frame every 400 ms.
const openGapSamples = SampleRate
