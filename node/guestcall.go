package node

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Guests: a person with no parley opens a supernode's /call/HANDLE page
// (`parley supernode --web`); the supernode resolves the handle and invites
// every device of it on /parley/call/2.0.0 like any caller, except that the
// invite says guest and carries no handle record. The call rings labelled
// as a guest via that server's peer ID (CallInfo.Guest) with no handle
// (CallInfo.Peer is ""): a guest can never appear as a handle, and the
// server vouches only for "someone on my page" (SECURITY.md, "Guests").
// Everything after the invite (accept, candidates, ICE restarts, hangup,
// answered elsewhere) is the ordinary protocol.

// ErrNoGuests refuses a guest's call on a device that takes none
// (Config.NoGuests).
var ErrNoGuests = errors.New("this device takes no guest calls")

// rejectNoGuests is the reject reason a guest server sees from such a device.
const rejectNoGuests = "no guests"

// inviteCaller checks who an invite is from: a handle whose signed record
// names the stream's device, or a guest via the stream's peer (the server).
func (n *Node) inviteCaller(f *callFrame, remote peer.ID) (handle, guestVia string, err error) {
	if f.Guest {
		if n.cfg.NoGuests {
			return "", "", ErrNoGuests
		}
		return "", remote.String(), nil
	}
	caller, err := n.checkHello(f.Record, remote)
	if err == nil && caller.Handle != f.From {
		err = fmt.Errorf("invite from %s carries the record of %s", f.From, caller.Handle)
	}
	if err != nil {
		return "", "", err
	}
	return caller.Handle, "", nil
}
