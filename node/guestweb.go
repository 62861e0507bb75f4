package node

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/browser"
	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/guestcall"
)

// ServeGuests serves the guest endpoint on addr (`parley daemon --web
// ADDR`): GET /call/HANDLE is a page a person without parley opens to call
// that handle, as on a supernode's --web. This daemon resolves the handle
// (verified, as for its own calls) and rings every device of it over
// libp2p, the guest labelled as coming via this device's peer ID.
//
// A guest's page gets the STUN servers of this node's supernodes, and no
// TURN: this device's relay credentials are its own (the callee's device
// relays when the NATs require it). This device does not ring for its own
// guests (it cannot open a stream to itself); its account's other devices
// do. The caller closes the server.
func (n *Node) ServeGuests(addr string, gc browser.GuestConfig) (*browser.GuestServer, error) {
	log := n.log.With("service", "guests")
	gc.Caller = guestcall.Caller{Host: n.host, FindPeer: n.dht.FindPeer, Logger: log,
		Resolve: func(ctx context.Context, handle string) (*discovery.HandleRecord, error) {
			return n.resolve(ctx, handle, cacheOK)
		}}
	gc.ICE = n.guestICE
	if gc.Logger == nil {
		gc.Logger = log
	}
	g, err := browser.ServeGuests(addr, gc)
	if err != nil {
		return nil, fmt.Errorf("daemon --web: %w", err)
	}
	log.Info("guest calls served", "url", g.URL()+"/call/HANDLE")
	return g, nil
}

// guestICE is a guest's ICE servers: the STUN servers of this node's
// supernodes (asked within restartFetchTimeout; the guest endpoint's
// per-IP limits bound how often).
func (n *Node) guestICE(_, _ netip.Addr, _ bool) []webrtc.ICEServer {
	ctx, cancel := context.WithTimeout(n.ctx, restartFetchTimeout)
	defer cancel()
	return n.supernodeICE(ctx, iceFirst)
}
