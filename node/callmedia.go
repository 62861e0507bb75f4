package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/parley-net/parley/media"
)

// The media watchdog of a call, run by its loop: the session's callbacks
// arrive as events; a path that stays down is restarted (the caller offers,
// the callee answers), and a peer heard neither on media nor on signalling
// for CallTimings.Lost ends the call. The tick also keeps the signalling
// link alive, finds a dead one and moves it off a relay circuit.

// watchMedia forwards the winning session's callbacks to the loop.
func (c *Call) watchMedia(l *leg) {
	s := l.session
	s.OnState(func(st media.State) { c.post(evMedia{l: l, st: st}) })
	if pw, ok := s.(interface{ OnPathChange(func(media.Path)) }); ok {
		pw.OnPathChange(func(p media.Path) { c.post(evPath{l: l, p: p}) })
	}
	c.lastHeard, c.lastPacket = c.clk.Now(), time.Time{}
	c.updateSnap()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select {
		case <-s.FirstAudio():
			c.post(evFirstAudio{l: l})
		case <-s.Done():
		case <-c.done:
			return
		}
		select {
		case <-s.Done():
			c.post(evMediaClosed{l: l})
		case <-c.done:
		}
	}()
}

func (c *Call) mediaState(st media.State) {
	switch st {
	case media.StateDisconnected, media.StateFailed:
		// The offerer restarts ICE; the callee answers its restarts.
		if c.dir == CallOutgoing && !c.armed(tRestart) {
			c.after(tRestart, c.t.Restart)
		}
	case media.StateConnected:
		c.failed = 0
		c.stop(tRestart)
		c.stop(tStuck)
	}
}

// pathChanged records a new pair carrying the media.
func (c *Call) pathChanged(now time.Time, p media.Path) {
	st := statsOf(media.Stats{Path: p})
	sw := PathSwitch{
		AtMS:   float64(now.Sub(c.started).Microseconds()) / 1000,
		Tier:   c.ice.tierOf(p),
		Path:   st.Path,
		Detail: st.PathDetail,
	}
	c.log.Info("media path", "tier", sw.Tier, "path", sw.Detail)
	c.mu.Lock()
	if len(c.info.Paths) >= maxPathSwitches {
		c.info.Paths = slices.Delete(c.info.Paths, 0, 1)
	}
	c.info.Paths = append(c.info.Paths, sw)
	c.mu.Unlock()
}

// tick checks that the peer is still there and keeps the link alive.
func (c *Call) tick() {
	l := c.winner
	if l == nil || l.session == nil {
		return
	}
	now := c.clk.Now()
	if p := l.session.PacketsReceived(); p != c.packets {
		c.packets, c.lastPacket, c.lastHeard = p, now, now
	}
	c.updateSnap()
	if now.Sub(c.lastHeard) >= c.t.Lost {
		c.log.Info("peer not heard", "for", now.Sub(c.lastHeard).Round(time.Millisecond))
		c.send(l, callFrame{Type: sigHangup, Reason: ReasonLost})
		c.end(ReasonLost)
		return
	}
	if l.link == nil {
		return
	}
	stale := now.Sub(c.lastPacket) >= c.t.MediaStale
	if !l.pingSent.IsZero() && now.Sub(l.pingSent) >= c.t.LinkDead && stale {
		// Pinged while the media was gone too, and nothing came back:
		// the link is dead even if its stream has not noticed (a relay
		// killed under a QUIC connection).
		c.log.Info("signalling link silent; re-opening", "for", now.Sub(l.pingSent).Round(time.Millisecond))
		l.link.reset(true)
		c.linkDown(l, fmt.Errorf("no answer to pings for %v", c.t.LinkDead))
		return
	}
	if c.dir == CallOutgoing && !c.reopening && !now.Before(c.nextUpgrade) && l.link.limited() && c.env.direct(l.device) {
		// Hole punching (or a device that became reachable) opened a
		// direct connection: signalling moves there off the relay's
		// circuit, which is capped in time and bytes and dies with the
		// relay.
		c.nextUpgrade = now.Add(5 * time.Second)
		c.log.Info("moving call signalling off the relay circuit")
		c.reopen()
	}
	if (stale && now.Sub(l.lastSent) >= c.t.StalePing) || now.Sub(l.lastSent) >= c.t.KeepAlive {
		if l.pingSent.IsZero() {
			l.pingSent = now
		}
		c.sendUnsequenced(l, callFrame{Type: sigPing})
	}
}

// restart restarts ICE (offerer side) when its timers say the path died.
func (c *Call) restart() {
	l := c.winner
	if l == nil || c.dir != CallOutgoing {
		return
	}
	if c.failed++; c.failed > c.t.MaxFailedRestarts {
		c.send(l, callFrame{Type: sigHangup, Reason: ReasonNoMediaPath})
		c.end(ReasonNoMediaPath)
		return
	}
	c.after(tStuck, c.t.RestartRetry)
	if l.link == nil {
		// An offer nobody can hear would be lost; send it when the link
		// is back.
		c.restartWanted = true
		return
	}
	if c.restarting {
		// The last restart is unanswered: pion cannot roll back a local
		// offer, so a new one replaces it.
		c.log.Debug("ICE restart unanswered; offering again")
	}
	c.startRestart(l)
}

func (c *Call) startRestart(l *leg) {
	c.restarting, c.restartWanted = true, false
	c.restartN++
	n := c.restartN
	path, profile := c.opts.Path, c.opts.Profile
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		rctx, cancel := context.WithTimeout(c.ctx, restartFetchTimeout)
		servers, ice, err := c.env.refreshICE(rctx, path, profile)
		cancel()
		if err != nil {
			c.log.Info("ICE servers not refreshed", "err", err)
		} else if err := l.session.SetICEServers(servers); err != nil {
			c.log.Info("ICE servers not refreshed", "err", err)
			ice = nil
		}
		octx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		sdp, err := l.session.RestartICE(octx)
		cancel()
		c.post(evRestartOffer{l: l, n: n, servers: servers, ice: ice, sdp: sdp, err: err})
	}()
}

func (c *Call) restartOffer(e evRestartOffer) {
	if e.l != c.winner || e.n != c.restartN {
		return // a newer restart replaced it
	}
	if e.ice != nil {
		c.ice = e.ice
	}
	if e.err != nil {
		c.restarting = false
		c.log.Warn("ICE restart", "err", e.err)
		return
	}
	c.restarts++
	c.updateSnap()
	c.log.Info("restarting ICE", "restarts", c.restarts)
	c.send(e.l, callFrame{Type: sigRestart, SDP: e.sdp, Restart: e.n})
}

// startRestartAnswer answers the caller's ICE restart off the loop: the
// relays may be slow to answer and must not hold up the call's events.
func (c *Call) startRestartAnswer(l *leg, f *callFrame) {
	c.answeringRestart = true
	offer, n := f.SDP, f.Restart
	path, profile := c.opts.Path, c.opts.Profile
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		rctx, cancel := context.WithTimeout(c.ctx, restartFetchTimeout)
		servers, ice, err := c.env.refreshICE(rctx, path, profile)
		cancel()
		if err == nil {
			if err := l.session.SetICEServers(servers); err != nil {
				c.log.Info("ICE servers not refreshed", "err", err)
				ice = nil
			}
		} else {
			c.log.Info("ICE servers not refreshed", "err", err)
		}
		actx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		sdp, err := l.session.Answer(actx, offer)
		cancel()
		c.post(evRestartAnswer{l: l, n: n, sdp: sdp, ice: ice, err: err})
	}()
}
