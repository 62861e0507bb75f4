//go:build !linux

package turnrelay

import (
	"errors"
	"net"
	"net/netip"
)

// haveDataPlane: without Linux's recvmmsg, sendmmsg and epoll, pion's own
// goroutines relay every datagram.
const haveDataPlane = false

const dpSlowQueue = 0

var errNoDataPlane = errors.New("turn relay data plane: Linux only")

type slowPkt struct {
	b    []byte
	from netip.AddrPort
}

type rawAddr struct{}

type dataPlane struct{ lis net.PacketConn }

func newDataPlane(*Server, string) (*dataPlane, error) { return nil, errNoDataPlane }
func (*dataPlane) openRelay(netip.AddrPort) (relaySocket, error) {
	return relaySocket{}, errNoDataPlane
}
func (*dataPlane) register(*relayConn) error                                        { return errNoDataPlane }
func (*dataPlane) unregister(*relayConn) error                                      { return errNoDataPlane }
func (*dataPlane) bindChannel(*relayConn, netip.AddrPort, netip.AddrPort, uint16)   {}
func (*dataPlane) unbindChannel(*relayConn, netip.AddrPort, netip.AddrPort, uint16) {}
func rawFromAddr(netip.AddrPort, int) (rawAddr, error)                              { return rawAddr{}, errNoDataPlane }
func sendto(int, []byte, *rawAddr) error                                            { return errNoDataPlane }
func closeFD(int)                                                                   {}
