package media

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/clock"
)

// rounds counts the check rounds a trigger asks for.
type rounds struct {
	mu  sync.Mutex
	seq []int
}

func (r *rounds) poke(seq int) { r.mu.Lock(); r.seq = append(r.seq, seq); r.mu.Unlock() }
func (r *rounds) n() int       { r.mu.Lock(); defer r.mu.Unlock(); return len(r.seq) }

func newTestTrigger() (*checkTrigger, *clock.Fake, *rounds) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	r := &rounds{}
	t := newCheckTrigger(clk)
	t.poke = r.poke
	return t, clk, r
}

// A check that arrives while connecting runs a round once the agent has
// handled it, rounds are spaced, capped per attempt, and nothing runs
// before arm, after disarm, or when the trigger is off.
func TestCheckTriggerRounds(t *testing.T) {
	trig, clk, r := newTestTrigger()

	trig.noteSTUN()
	trig.handled()
	if r.n() != 0 {
		t.Fatalf("a check before arm ran %d rounds", r.n())
	}

	trig.arm()
	trig.handled() // nothing pending: a plain read
	if r.n() != 0 {
		t.Fatalf("a read with no check ran %d rounds", r.n())
	}
	trig.noteSTUN()
	if r.n() != 0 {
		t.Fatal("a round ran before the agent handled the check")
	}
	trig.handled()
	if r.n() != 1 {
		t.Fatalf("after a handled check: %d rounds, want 1", r.n())
	}

	// Within the spacing: one round, when the spacing ends.
	clk.Advance(triggerSpacing / 4)
	trig.noteSTUN()
	trig.handled()
	trig.noteSTUN()
	trig.handled()
	if r.n() != 1 {
		t.Fatalf("checks within the spacing ran at once: %d rounds", r.n())
	}
	clk.Advance(triggerSpacing)
	if r.n() != 2 {
		t.Fatalf("after the spacing: %d rounds, want 2", r.n())
	}

	// The relay hold-back's round.
	clk.Advance(relayHoldBack)
	if r.n() != 3 {
		t.Fatalf("after the relay hold-back: %d rounds, want 3", r.n())
	}

	// The cap.
	for range 2 * triggerMax {
		clk.Advance(triggerSpacing)
		trig.noteSTUN()
		trig.handled()
	}
	if r.n() != triggerMax {
		t.Fatalf("%d rounds in one attempt, want the cap %d", r.n(), triggerMax)
	}

	// A new attempt (ICE restart) starts a new count; disarm stops it.
	trig.arm()
	clk.Advance(triggerSpacing)
	trig.noteSTUN()
	trig.handled()
	if r.n() != triggerMax+1 {
		t.Fatalf("after re-arming: %d rounds, want %d", r.n(), triggerMax+1)
	}
	trig.disarm()
	clk.Advance(time.Second)
	trig.noteSTUN()
	trig.handled()
	if r.n() != triggerMax+1 {
		t.Fatalf("after disarm: %d rounds, want %d", r.n(), triggerMax+1)
	}
	seen := map[int]bool{}
	for _, s := range r.seq {
		if seen[s] {
			t.Fatalf("round number %d used twice: the agent would drop it as a duplicate", s)
		}
		seen[s] = true
	}

	off, clk2, r2 := newTestTrigger()
	off.off = true
	off.arm()
	off.noteSTUN()
	off.handled()
	clk2.Advance(time.Second)
	if r2.n() != 0 {
		t.Fatalf("a trigger that is off ran %d rounds", r2.n())
	}
}

// Only STUN binding requests and success responses count; RTP, DTLS,
// other STUN methods and short datagrams do not.
func TestIsBindingCheck(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	ok := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	rtp := []byte{0x80, 0x6f, 0, 1, 0, 0, 0, 160, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	dtls := append([]byte{22, 0xfe, 0xfd}, make([]byte, 30)...)
	for name, tc := range map[string]struct {
		b    []byte
		want bool
	}{
		"binding request": {req.Raw, true},
		"binding success": {ok.Raw, true},
		"allocate":        {alloc.Raw, false},
		"rtp":             {rtp, false},
		"dtls":            {dtls, false},
		"short":           {req.Raw[:19], false},
		"empty":           {nil, false},
	} {
		if got := isBindingCheck(tc.b); got != tc.want {
			t.Errorf("%s: isBindingCheck = %v, want %v", name, got, tc.want)
		}
	}
}

func FuzzIsBindingCheck(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte{0x80, 0x6f, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := isBindingCheck(b)
		var m stun.Message
		m.Raw = append([]byte(nil), b...)
		if got && m.Decode() == nil && m.Type != stun.BindingRequest && m.Type != stun.BindingSuccess {
			t.Fatalf("isBindingCheck true for a %v", m.Type)
		}
	})
}

// The rounds' candidates are never paired: a call that connected with
// the trigger on has no pair, and no candidate in use, outside loopback.
func TestTriggerCandidatesNeverPaired(t *testing.T) {
	c := newCall(t, Config{Source: SpeechLikeSource(3)}, Config{Source: SpeechLikeSource(4)})
	c.connect(t)
	waitClosed(t, c.a.FirstAudio(), 10*time.Second, "first audio at a")
	// The trigger was armed (a offered); make sure it ran at least once,
	// or the test proves nothing.
	c.a.trig.mu.Lock()
	ran := c.a.trig.seq
	c.a.trig.mu.Unlock()
	if ran == 0 {
		t.Fatal("the caller's trigger never ran a round")
	}
	ids := map[string]bool{}
	for _, v := range c.a.pc.GetStats() {
		if cs, ok := v.(webrtc.ICECandidateStats); ok && strings.Contains(cs.IP, "2001:db8") {
			ids[cs.ID] = true
		}
	}
	if len(ids) == 0 {
		t.Fatal("no trigger candidate in the caller's stats: the rounds added none")
	}
	for _, v := range c.a.pc.GetStats() {
		if p, ok := v.(webrtc.ICECandidatePairStats); ok && (ids[p.RemoteCandidateID] || ids[p.LocalCandidateID]) {
			t.Errorf("a trigger candidate was paired: %+v", p)
		}
	}
	c.close(t, c.a)
}
