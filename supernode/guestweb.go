package supernode

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/guestcall"
	"github.com/parley-net/parley/internal/turnrest"
)

// The guest endpoint of a supernode (Config.Web, `parley supernode --web
// ADDR`): GET /call/HANDLE is a page a person without parley opens to call
// that handle (browser.GuestServer); package guestcall rings the handle's
// devices. The page gets this supernode's STUN server and, when it runs
// TURN, a relay credential of guestTURNTTL, per client IP and rate-limited
// (browser.GuestConfig.TURNPerMinute).

// guestTURNTTL is the lifetime of a guest's TURN credential: a call's
// allocation refreshes with it for as long as the page keeps it.
const guestTURNTTL = 10 * time.Minute

// startGuestWeb serves the guest endpoint on s.cfg.Web.
func (s *Supernode) startGuestWeb() error {
	gc := s.cfg.WebGuests
	gc.Caller = guestcall.Caller{Host: s.host, Resolve: s.resolveHandle, FindPeer: s.dht.FindPeer, Logger: s.cfg.Logger}
	gc.ICE = s.guestICE
	if gc.Logger == nil {
		gc.Logger = s.cfg.Logger.With("service", "guests")
	}
	g, err := browser.ServeGuests(s.cfg.Web, gc)
	if err != nil {
		return fmt.Errorf("supernode --web: %w", err)
	}
	s.guests = g
	s.cfg.Logger.Info("guest calls served", "url", g.URL()+"/call/HANDLE")
	return nil
}

// guestICE is a guest's ICE servers: this supernode's STUN and TURN, named
// by the address the guest reached the web endpoint at.
func (s *Supernode) guestICE(client, local netip.Addr, turn bool) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	host := local.String()
	if s.turn != nil && s.turn.CredentialConfig().PublicHost != "" {
		host = s.turn.CredentialConfig().PublicHost // behind a NAT: the operator's name for this host
	} else if !local.IsValid() || local.IsUnspecified() {
		return nil
	}
	if s.stun != nil {
		out = append(out, webrtc.ICEServer{URLs: []string{"stun:" + net.JoinHostPort(host, strconv.Itoa(s.stun.Addr().Port))}})
	}
	if s.turn == nil || !turn {
		return out
	}
	cc := s.turn.CredentialConfig()
	cred, err := turnrest.Issue(cc.Secret, "guest-"+strings.ReplaceAll(client.String(), ":", "."), guestTURNTTL, time.Now())
	if err != nil {
		s.cfg.Logger.Warn("guest TURN credential", "err", err)
		return out
	}
	var urls []string
	for _, u := range []struct {
		scheme, transport string
		port              int
	}{{"turn", "udp", cc.UDPPort}, {"turn", "tcp", cc.TCPPort}, {"turns", "tcp", cc.TLSPort}} {
		if u.port != 0 {
			urls = append(urls, u.scheme+":"+net.JoinHostPort(host, strconv.Itoa(u.port))+"?transport="+u.transport)
		}
	}
	if len(urls) > 0 {
		out = append(out, webrtc.ICEServer{URLs: urls, Username: cred.Username, Credential: cred.Password})
	}
	return out
}

// GuestWebURL is the guest endpoint's base URL, or "".
func (s *Supernode) GuestWebURL() string {
	if s.guests == nil {
		return ""
	}
	return s.guests.URL()
}

// GuestWebAddr is where the guest endpoint listens, or nil.
func (s *Supernode) GuestWebAddr() net.Addr {
	if s.guests == nil {
		return nil
	}
	return s.guests.Addr()
}
