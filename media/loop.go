package media

import (
	"sync/atomic"
	"time"
)

// maxCatchUp is how many frames a pacing loop will process at once after a
// stall (200 ms, what the jitter buffer and device queues absorb by
// default); beyond that it skips ahead to stay in real time.
const maxCatchUp = 10

// mediaLoop is the session's one pacing goroutine: every 20 ms it sends the
// frames due, once the call has connected, and plays the frames due, once
// the peer's track has arrived. One ticker and one goroutine for both
// halves wake the process half as often as a loop for each (see
// BENCHMARKS.md, "Per-call CPU").
func (s *Session) mediaLoop() {
	defer s.wg.Done()
	t := time.NewTicker(FrameDuration)
	defer t.Stop()
	var sn *sender
	var pl *player
	for {
		if sn == nil && s.sendOn.Load() {
			sn = s.newSender()
		}
		if pl == nil && s.playOn.Load() {
			pl = s.newPlayer()
		}
		now := s.cfg.Now()
		if sn != nil {
			s.sendDue(sn, now)
		}
		if pl != nil {
			s.playDue(pl, now)
		}
		select {
		case <-s.quit:
			return
		case <-t.C:
		case <-s.loopWake:
		}
	}
}

// startMedia turns on one half of mediaLoop (on is s.sendOn or s.playOn),
// starting the loop if it is not running yet, and wakes it so the half
// starts at once. s.mu must be held.
func (s *Session) startMedia(on *atomic.Bool) {
	on.Store(true)
	if !s.loopStarted {
		s.loopStarted = true
		s.wg.Add(1)
		go s.mediaLoop()
	}
	select {
	case s.loopWake <- struct{}{}:
	default:
	}
}
