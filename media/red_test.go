package media

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestREDEncoding checks the exact bytes of RED payloads (RFC 2198 §3)
// and that they parse back.
func TestREDEncoding(t *testing.T) {
	for _, tc := range []struct {
		name      string
		redundant []redBlock
		primary   []byte
		want      []byte
	}{
		{"primary only", nil, []byte{0xaa, 0xbb}, []byte{111, 0xaa, 0xbb}},
		{
			"one redundant frame",
			[]redBlock{{tsOffset: 960, data: []byte{1, 2, 3}}},
			[]byte{9},
			// F=1|PT 111, offset 960 (14 bits) and length 3 (10 bits):
			// 960<<10|3 = 0x0F0003.
			[]byte{0x80 | 111, 0x0f, 0x00, 0x03, 111, 1, 2, 3, 9},
		},
		{
			"two redundant frames, the largest fields",
			[]redBlock{{tsOffset: maxREDOffset, data: bytes.Repeat([]byte{7}, maxREDBlockLength)}, {tsOffset: 960, data: nil}},
			nil,
			append([]byte{0x80 | 111, 0xff, 0xff, 0xff, 0x80 | 111, 0x0f, 0x00, 0x00, 111}, bytes.Repeat([]byte{7}, maxREDBlockLength)...),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendRED(nil, 111, tc.redundant, tc.primary)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("appendRED = % x\nwant        % x", got, tc.want)
			}
			var p redPacket
			if err := parseRED(got, &p); err != nil {
				t.Fatal(err)
			}
			if p.n != len(tc.redundant) || p.primary.pt != 111 || !bytes.Equal(p.primary.data, tc.primary) {
				t.Fatalf("parsed %d blocks, primary %d % x", p.n, p.primary.pt, p.primary.data)
			}
			for i, b := range tc.redundant {
				g := p.redundant[i]
				if g.pt != 111 || g.tsOffset != b.tsOffset || !bytes.Equal(g.data, b.data) {
					t.Errorf("block %d: pt %d offset %d % x", i, g.pt, g.tsOffset, g.data)
				}
			}
		})
	}
}

func TestREDMalformed(t *testing.T) {
	nine := bytes.Repeat([]byte{0x80 | 111, 0x0f, 0x00, 0x00}, maxREDBlocks)
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"no final header", []byte{0x80 | 111, 0x0f, 0x00, 0x01}},
		{"truncated block header", []byte{0x80 | 111, 0x0f}},
		{"block longer than the payload", []byte{0x80 | 111, 0x0f, 0x00, 0x05, 111, 1, 2}},
		{"zero offset", []byte{0x80 | 111, 0x00, 0x00, 0x01, 111, 1}},
		{"offsets out of order", []byte{0x80 | 111, 0x0f, 0x00, 0x00, 0x80 | 111, 0x1e, 0x00, 0x00, 111}},
		{"too many blocks", append(nine, 111)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p redPacket
			if err := parseRED(tc.payload, &p); !errors.Is(err, ErrBadRED) {
				t.Fatalf("parseRED(% x) = %v, want ErrBadRED", tc.payload, err)
			}
		})
	}
}

// FuzzParseRED checks that the RED decoder never panics, never reads past
// its input, and that whatever it accepts encodes back to the same bytes.
func FuzzParseRED(f *testing.F) {
	f.Add([]byte{111, 1, 2})
	f.Add([]byte{0x80 | 111, 0x0f, 0x00, 0x03, 111, 1, 2, 3, 9})
	f.Add([]byte{0x80 | 111, 0x1e, 0x00, 0x01, 0x80 | 111, 0x0f, 0x00, 0x01, 111, 1, 2, 3})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var p redPacket
		if err := parseRED(payload, &p); err != nil {
			return
		}
		if p.n >= maxREDBlocks {
			t.Fatalf("%d redundant blocks", p.n)
		}
		again := appendRED(nil, 0, nil, nil)[:0]
		for i := range p.n {
			b := p.redundant[i]
			h := b.tsOffset<<10 | uint32(len(b.data))
			again = append(again, 0x80|b.pt, byte(h>>16), byte(h>>8), byte(h))
		}
		again = append(again, p.primary.pt)
		for i := range p.n {
			again = append(again, p.redundant[i].data...)
		}
		again = append(again, p.primary.data...)
		if !bytes.Equal(again, payload) {
			t.Fatalf("re-encoded % x\nfrom        % x", again, payload)
		}
	})
}

func TestREDHistory(t *testing.T) {
	var h redHistory
	if b := h.blocksFor(100, 96000, 2); len(b) != 0 {
		t.Fatalf("first packet carries %d redundant blocks", len(b))
	}
	h.add(100, 96000, []byte{1})
	h.add(101, 96960, []byte{2})
	b := h.blocksFor(102, 97920, 2)
	if len(b) != 2 || b[0].data[0] != 1 || b[0].tsOffset != 1920 || b[1].data[0] != 2 || b[1].tsOffset != 960 {
		t.Fatalf("distance 2: %+v", b)
	}
	if b := h.blocksFor(102, 97920, 1); len(b) != 1 || b[0].data[0] != 2 {
		t.Fatalf("distance 1: %+v", b)
	}
	// After a DTX pause of 200 ms the previous packets are still the ones
	// before in sequence, at a larger offset.
	if b := h.blocksFor(102, 96960+10*960, 2); len(b) != 2 || b[1].tsOffset != 10*960 {
		t.Fatalf("after a pause: %+v", b)
	}
	// Frames too old for the 14-bit offset, or not just before in
	// sequence, are left out.
	if b := h.blocksFor(102, 96960+maxREDOffset+1, 2); len(b) != 0 {
		t.Fatalf("offset past 14 bits: %+v", b)
	}
	if b := h.blocksFor(105, 97920, 2); len(b) != 0 {
		t.Fatalf("after a sequence gap: %+v", b)
	}
	h.add(102, 97920, bytes.Repeat([]byte{3}, maxREDBlockLength+1))
	if b := h.blocksFor(103, 98880, 2); len(b) != 1 || b[0].data[0] != 2 {
		t.Fatalf("a frame too long for the 10-bit length is left out: %+v", b)
	}
}

func TestREDPolicy(t *testing.T) {
	p := newREDPolicy(1)
	steps := []struct {
		loss float64
		want int
	}{
		{0, 2}, {0, 2}, {0, 2}, {0, 2}, {0, 1}, // two until five calm reports
		{4, 2}, {1, 2}, {0, 2}, {0, 2}, {0, 2}, {0, 2}, {0, 1}, // five calm reports step down
		{0, 1}, {0, 1}, {0, 1}, {0, 1}, {0, 1}, // never below the floor
		{0.6, 1}, {10, 2},
	}
	for i, s := range steps {
		p.report(s.loss)
		if d, _ := p.state(); d != s.want {
			t.Fatalf("report %d (%.1f%% loss): distance %d, want %d", i, s.loss, d, s.want)
		}
	}
	if _, loss := p.state(); loss < 2 {
		t.Errorf("smoothed loss %d%% after a 10%% report", loss)
	}
}

func TestPayloadTypes(t *testing.T) {
	opus := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 109}
	red := func(fmtp string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/RED", ClockRate: 48000, Channels: 2, SDPFmtpLine: fmtp}, PayloadType: 63}
	}
	for _, tc := range []struct {
		name          string
		codecs        []webrtc.RTPCodecParameters
		opusPT, redPT webrtc.PayloadType
		ok            bool
	}{
		{"opus only", []webrtc.RTPCodecParameters{opus}, 109, 0, true},
		{"red for opus", []webrtc.RTPCodecParameters{opus, red("109/109")}, 109, 63, true},
		{"red for opus, three blocks", []webrtc.RTPCodecParameters{red("109/109/109"), opus}, 109, 63, true},
		{"red for another codec", []webrtc.RTPCodecParameters{opus, red("0/0")}, 109, 0, true},
		{"red for a mix", []webrtc.RTPCodecParameters{opus, red("109/0")}, 109, 0, true},
		{"no opus", []webrtc.RTPCodecParameters{red("109/109")}, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, r, ok := payloadTypes(tc.codecs)
			if o != tc.opusPT || r != tc.redPT || ok != tc.ok {
				t.Fatalf("payloadTypes = %d, %d, %v; want %d, %d, %v", o, r, ok, tc.opusPT, tc.redPT, tc.ok)
			}
		})
	}
}

// TestJitterBufferRED plays a stream in which packet 3 is lost and its
// frame comes again inside packet 4: it must be played, not concealed, and
// counted as rebuilt; a copy that comes after its slot was concealed must
// raise the delay instead; a copy of a frame already played is ignored.
func TestJitterBufferRED(t *testing.T) {
	j := newJitterBuffer(defaultJitterConfig())
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	push := func(seq uint16, ms int) {
		j.push(seq, uint32(seq)*FrameSamples, fakeOpus(seq, true), at(ms))
		if seq > 0 {
			j.pushRedundant(seq-1, uint32(seq-1)*FrameSamples, fakeOpus(seq-1, true), at(ms))
		}
	}
	var played []int
	var kinds []playKind
	play := func(ms int) {
		k, p := j.pop(at(ms))
		kinds = append(kinds, k)
		played = append(played, seqOf(p))
	}
	for seq := range uint16(8) {
		if seq != 3 {
			push(seq, int(seq)*20)
		}
		if seq >= 2 {
			play(int(seq) * 20)
		}
	}
	st := j.stats()
	if st.REDSamples != FrameSamples || st.ConcealedSamples != 0 {
		t.Fatalf("played %v (%v): RED %d samples, concealed %d", played, kinds, st.REDSamples, st.ConcealedSamples)
	}
	for i, seq := range played {
		if seq != i {
			t.Fatalf("played %v, want 0, 1, 2, …", played)
		}
	}
	if st.Expected-st.Received != 1 {
		t.Errorf("expected %d, received %d: the network lost one packet", st.Expected, st.Received)
	}

	// Packet 9 and the one carrying its copy (10) are lost; 11 carries 10.
	target := j.target()
	push(8, 160)
	play(160)
	play(180) // slot of 9: 8 has played and nothing is buffered
	push(11, 220)
	play(200)
	play(220)
	play(240) // 8, 9 and 10 have played: the buffer is two frames deep
	// A late copy of 9 (as if a packet with distance 2 came late).
	j.pushRedundant(9, 9*FrameSamples, fakeOpus(9, true), at(260))
	st = j.stats()
	if st.ConcealedSamples == 0 || st.REDSamples != 2*FrameSamples {
		t.Fatalf("played %v (%v): concealed %d, RED %d samples", played, kinds, st.ConcealedSamples, st.REDSamples)
	}
	if st.LateRedundant != 1 || j.target() <= target {
		t.Errorf("late copy of a concealed frame: counted %d, target %d after %d", st.LateRedundant, j.target(), target)
	}
	// A copy of a frame already played changes nothing.
	buffered := len(j.pkts)
	j.pushRedundant(8, 8*FrameSamples, fakeOpus(8, true), at(260))
	if st2 := j.stats(); st2.LateRedundant != st.LateRedundant || st2.Duplicate != st.Duplicate || len(j.pkts) != buffered {
		t.Errorf("a copy of a played frame was taken: %+v; played %v (%v), buffered %+v", st2, played, kinds, j.pkts)
	}
}

// TestREDInSDP checks that the offer lists RED for Opus as Chrome does
// (Opus first, then "red/48000/2" with fmtp "111/111"), that a session
// with NoRED leaves it out of its answer, and that a session with RED
// takes it from an offer that has it.
func TestREDInSDP(t *testing.T) {
	ctx := context.Background()
	newS := func(noRED bool) *Session {
		s, err := NewSession(loopback(t, Config{NoRED: noRED}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	offer, err := newS(false).CreateOffer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n", "a=rtpmap:63 red/48000/2\r\n", "a=fmtp:63 111/111\r\n"} {
		if !strings.Contains(offer, want) {
			t.Errorf("offer lacks %q:\n%s", want, offer)
		}
	}
	for _, tc := range []struct {
		name    string
		noRED   bool
		wantRED bool
	}{
		{"answerer with RED", false, true},
		{"answerer without RED", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer, err := newS(tc.noRED).Answer(ctx, offer)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(answer, "red/48000/2"); got != tc.wantRED {
				t.Errorf("answer has RED: %v, want %v:\n%s", got, tc.wantRED, answer)
			}
		})
	}
}
