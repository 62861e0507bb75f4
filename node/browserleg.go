package node

import (
	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/media"
)

// A browser leg: the call's media runs in a web page's RTCPeerConnection
// instead of a pion session of this process. The call's state machine does
// not know the difference: a *browser.Session has the methods of
// callSession, and the page's offers, answers, candidates and ICE restarts
// ride this device's authenticated signalling like pion's (so the DTLS
// fingerprint the peer checks is the page's, carried over Noise).

var _ callSession = (*browser.Session)(nil)

// legSession makes a call leg's media session: in opts.Browser's page when
// set, else a pion session with mcfg.
func legSession(opts CallOptions, mcfg media.Config) (callSession, error) {
	if opts.Browser == nil {
		s, err := media.NewSession(mcfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	// The page's silence reads as a dead path after the time a pion
	// session's ICE would take: the same trigger for an ICE restart.
	s, err := opts.Browser.NewSession(browser.SessionConfig{ICEServers: mcfg.ICEServers, RelayOnly: mcfg.RelayOnly,
		StallTimeout: mcfg.DisconnectedTimeout})
	if err != nil {
		return nil, err
	}
	return s, nil
}
