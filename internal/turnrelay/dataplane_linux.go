package turnrelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The UDP data plane. pion/turn stays the control plane (authentication,
// Allocate, Refresh, CreatePermission, ChannelBind, Send and Data
// indications, timers), but the datagrams of bound channels, the bulk of a
// relay's work, bypass it: pion reads every client datagram in one
// goroutine and every peer datagram in one goroutine per allocation, so
// each datagram costs a netpoller wake-up, a goroutine switch and pion's
// per-datagram allocations, logging calls and lookups.
//
// Here one goroutine owns an epoll set of raw, non-blocking sockets the Go
// runtime never polls: the UDP listener and every relayed socket of a UDP
// client. Each readiness event costs one recvmmsg (up to dpBatch
// datagrams); ChannelData from a client whose channel pion has bound goes
// straight out of the relayed socket with one sendto, and datagrams from a
// peer with a permission and a channel are framed as ChannelData and sent
// to their clients with one sendmmsg per round. Everything else (STUN
// requests, Send indications, ChannelData pion has not bound, datagrams
// from a permitted peer without a channel) is handed to pion's goroutines
// as before, so the protocol's behaviour is pion's.
//
// The fast path makes the same checks as pion's path with relayConn: a
// client datagram needs a channel pion bound for that client (the policy
// check pion's PermissionHandler made at ChannelBind is kept with it; the
// policy cannot change), is refused to our own addresses (toSelf, which can
// change as allocations come and go, so it is checked per datagram) and
// counts against the allocation's to-peer budget; a peer datagram needs a
// permission for the peer's IP and counts against the to-client budget.
//
// Channel state comes from pion's OnChannelCreated and OnChannelDeleted
// events, which pion fires before it answers the ChannelBind and when the
// binding expires or the allocation ends.

// haveDataPlane: this platform has the data plane.
const haveDataPlane = true

// Every system call of the loop is non-blocking (MSG_DONTWAIT, epoll_pwait
// with a zero timeout; the loop parks in the netpoller instead), so it
// makes them as raw system calls: the runtime's entersyscall/exitsyscall
// bookkeeping would otherwise have sysmon wake every 20 µs to take the
// loop's processor away during a sendto that a loaded host stretches
// (measured: 30% of the relay's CPU at 50 streams in sysmon alone).

const (
	// dpBatch is how many datagrams one recvmmsg or sendmmsg moves.
	dpBatch = 64
	// dpBufSize holds the largest UDP payload pion accepts (its inbound
	// MTU is 1600) plus a ChannelData header and padding.
	dpBufSize = 2048
	// dpSlowQueue is how many datagrams may wait for pion's goroutines
	// (control messages on the listener; Data-indication traffic per
	// allocation). The loop never blocks on pion: when a queue is full the
	// datagram is dropped, as the kernel would drop it.
	dpSlowQueue = 512
	// dpListenerID and dpWakeID tag epoll events; relay IDs are positive.
	dpListenerID = -1
	dpWakeID     = -2
)

// slowPkt is a datagram handed to one of pion's goroutines.
type slowPkt struct {
	b    []byte
	from netip.AddrPort
}

// rawAddr is a socket address in the kernel's layout.
type rawAddr struct {
	sa  unix.RawSockaddrInet6 // large enough for sockaddr_in too
	len uint32
}

// mmsgBatch is a set of message headers and buffers for recvmmsg or
// sendmmsg; the iovecs and names point into the batch itself.
type mmsgBatch struct {
	hdrs  [dpBatch]unix.Mmsghdr
	iovs  [dpBatch]unix.Iovec
	names [dpBatch]unix.RawSockaddrInet6
	bufs  [dpBatch][dpBufSize]byte
	n     int // sendmmsg: messages queued
}

func newBatch() *mmsgBatch {
	b := &mmsgBatch{}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(dpBufSize)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(b.names[i]))
	}
	return b
}

// recv reads up to max datagrams from fd without blocking.
func (b *mmsgBatch) recv(fd, max int) (int, error) {
	for i := 0; i < max; i++ {
		b.iovs[i].SetLen(dpBufSize)
		b.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		b.hdrs[i].Hdr.Flags = 0
		b.hdrs[i].Len = 0
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(max), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// msg is the i-th received datagram and its source (invalid if the
// address family is unknown or the datagram was truncated).
func (b *mmsgBatch) msg(i int) ([]byte, netip.AddrPort) {
	h := &b.hdrs[i]
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return nil, netip.AddrPort{}
	}
	return b.bufs[i][:h.Len], addrFromRaw(&b.names[i])
}

// flush sends the queued datagrams; those the kernel refuses (a full
// socket buffer, an unreachable address) are dropped.
func (b *mmsgBatch) flush(fd int) (sent int) {
	i := 0
	for i < b.n {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[i])),
			uintptr(b.n-i), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			i++ // skip the datagram the kernel refused
		default:
			i += int(n)
			sent += int(n)
		}
	}
	b.n = 0
	return sent
}

// addrFromRaw decodes a sockaddr_in or sockaddr_in6 (IPv4-mapped
// addresses unmapped).
func addrFromRaw(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// rawFromAddr encodes ap for a socket of family fam (an IPv4 address is
// mapped for an AF_INET6 socket).
func rawFromAddr(ap netip.AddrPort, fam int) (rawAddr, error) {
	var r rawAddr
	ip := ap.Addr().Unmap()
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&r.sa.Port))[:], ap.Port())
	switch {
	case fam == unix.AF_INET && ip.Is4():
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = ip.As4()
		r.len = unix.SizeofSockaddrInet4
	case fam == unix.AF_INET6:
		r.sa.Family = unix.AF_INET6
		r.sa.Addr = ip.As16() // IPv4-mapped for an IPv4 address
		r.len = unix.SizeofSockaddrInet6
	default:
		return r, fmt.Errorf("address %v does not fit a socket of family %d", ap, fam)
	}
	return r, nil
}

// sendto sends one datagram on a raw socket without blocking.
func sendto(fd int, p []byte, to *rawAddr) error {
	var base unsafe.Pointer
	if len(p) > 0 {
		base = unsafe.Pointer(&p[0])
	}
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(base), uintptr(len(p)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&to.sa)), uintptr(to.len))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// udpSocket opens a non-blocking UDP socket bound to ap, for the data
// plane alone (the Go runtime never polls it). Port 0 picks a free port.
// With dualStack, an unspecified address gets one socket for both
// families, as net.ListenPacket("udp", "0.0.0.0:…") does; otherwise an
// IPv4 address gets an IPv4 socket and an IPv6 one an IPv6-only socket,
// as net.ListenUDP("udp4"/"udp6", …) do.
func udpSocket(ap netip.AddrPort, dualStack bool) (fd, fam int, err error) {
	ip := ap.Addr().Unmap()
	dual := dualStack && ip.IsUnspecified()
	fam = unix.AF_INET
	if dual || ip.Is6() {
		fam = unix.AF_INET6
	}
	fd, err = unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil && dual && ip.Is4() { // an IPv4 wildcard on a host without IPv6
		dual, fam = false, unix.AF_INET
		fd, err = unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	}
	if err != nil {
		return -1, 0, fmt.Errorf("UDP socket: %w", err)
	}
	if fam == unix.AF_INET6 {
		only := 1
		if dual {
			only = 0
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, only); err != nil {
			unix.Close(fd)
			return -1, 0, fmt.Errorf("UDP socket IPV6_V6ONLY: %w", err)
		}
	}
	if err := bindRaw(fd, fam, ap); err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	return fd, fam, nil
}

func bindRaw(fd, fam int, ap netip.AddrPort) error {
	var sa unix.Sockaddr
	if fam == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	} else if ip := ap.Addr(); ip.Unmap().IsUnspecified() {
		sa = &unix.SockaddrInet6{Port: int(ap.Port())} // "::", both families unless IPV6_V6ONLY
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind UDP %v: %w", ap, err)
	}
	return nil
}

// localAddr is the address a raw socket is bound to.
func localAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("socket address %T", sa)
}

// fastChan is a channel pion bound, as the client-to-peer path needs it.
type fastChan struct {
	relay    *relayConn
	peer     netip.AddrPort
	peerRaw  rawAddr
	policyOK bool // the peer passed PeerPolicy (immutable) when bound
}

type chanKey struct {
	client netip.AddrPort
	num    uint16
}

// dataPlane is the epoll loop and its tables.
type dataPlane struct {
	s    *Server
	epfd int
	// ep is epfd as a file in Go's netpoller: the loop parks there, like
	// any goroutine waiting on a socket, instead of blocking a thread in
	// epoll_wait (a thread blocked in a system call keeps the runtime's
	// sysmon waking every 20 µs to take its processor away, which cost
	// more than the relaying at 50 streams).
	ep   *os.File
	epRC syscall.RawConn
	wake int // eventfd that interrupts epoll_wait
	lis  *fastListener
	done chan struct{}
	// fastPackets counts datagrams relayed without pion, both directions
	// (tests read it to know the fast path carried the traffic).
	fastPackets atomic.Uint64

	// mu guards the fields below. The loop holds it while it handles one
	// round of epoll events, so a relay's socket is closed (under mu) only
	// between rounds. Lock order: dataPlane.mu, then relayConn.mu.
	mu      sync.Mutex
	closed  bool
	relays  map[int32]*relayConn
	nextID  int32
	chans   map[chanKey]*fastChan
	in, out *mmsgBatch // loop-owned: listener reads, datagrams to clients
	rin     *mmsgBatch // loop-owned: relayed-socket reads
}

// errDataPlaneClosed is returned once the data plane has stopped.
var errDataPlaneClosed = errors.New("turn relay data plane closed")

// newDataPlane opens the UDP listener at addr and starts the loop.
func newDataPlane(s *Server, addr string) (*dataPlane, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("turn relay UDP listener %s: %w", addr, err)
	}
	ap := ua.AddrPort()
	if !ap.Addr().IsValid() {
		ap = netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port())
	}
	fd, fam, err := udpSocket(ap, true)
	if err != nil {
		return nil, fmt.Errorf("turn relay UDP listener %s: %w", addr, err)
	}
	// Every client's datagrams queue on this one socket; the default
	// buffer holds only ~10 ms of a few hundred calls. The kernel caps it
	// at net.core.rmem_max / wmem_max.
	for _, o := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, udpSocketBuffer); err != nil {
			s.log.Debug("TURN UDP socket buffer", "opt", o, "err", err)
		}
	}
	local, err := localAddr(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("turn relay UDP listener %s: %w", addr, err)
	}
	d := &dataPlane{s: s, epfd: -1, wake: -1, done: make(chan struct{}),
		relays: map[int32]*relayConn{}, chans: map[chanKey]*fastChan{},
		in: newBatch(), out: newBatch(), rin: newBatch()}
	d.lis = &fastListener{d: d, fd: fd, fam: fam, local: net.UDPAddrFromAddrPort(local),
		ctl: make(chan slowPkt, dpSlowQueue), closed: make(chan struct{})}
	if err := d.start(); err != nil {
		d.lis.closeFD()
		return nil, err
	}
	go d.loop()
	return d, nil
}

func (d *dataPlane) start() error {
	var err error
	if d.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("turn relay epoll: %w", err)
	}
	if err := unix.SetNonblock(d.epfd, true); err != nil {
		unix.Close(d.epfd)
		return fmt.Errorf("turn relay epoll: %w", err)
	}
	// A non-blocking descriptor: os.NewFile registers it with the poller.
	d.ep = os.NewFile(uintptr(d.epfd), "turn-relay-epoll")
	if d.epRC, err = d.ep.SyscallConn(); err != nil {
		d.ep.Close()
		return fmt.Errorf("turn relay epoll: %w", err)
	}
	if d.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		d.ep.Close()
		return fmt.Errorf("turn relay eventfd: %w", err)
	}
	for _, r := range []struct {
		fd int
		id int32
	}{{d.wake, dpWakeID}, {d.lis.fd, dpListenerID}} {
		if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, r.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: r.id}); err != nil {
			unix.Close(d.wake)
			d.ep.Close()
			return fmt.Errorf("turn relay epoll add: %w", err)
		}
	}
	return nil
}

// stop ends the loop and waits for it; the listener's socket stays open
// until the listener is closed.
func (d *dataPlane) stop() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.done
		return
	}
	d.closed = true
	d.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(d.wake, one[:])
	<-d.done
	unix.Close(d.wake)
	d.ep.Close()
}

func (d *dataPlane) loop() {
	defer close(d.done)
	var events [dpBatch]unix.EpollEvent
	for {
		n, err := d.wait(events[:])
		if err != nil {
			d.s.log.Error("TURN data plane stopped", "err", err)
			return
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return
		}
		now := d.s.s.Now()
		for _, ev := range events[:n] {
			switch ev.Fd {
			case dpWakeID:
			case dpListenerID:
				d.fromClients(now)
			default:
				if r := d.relays[ev.Fd]; r != nil {
					d.fromPeers(r, now)
				}
			}
		}
		d.flushOut()
		d.mu.Unlock()
	}
}

// wait returns the next ready events, parking in Go's netpoller while
// there are none.
func (d *dataPlane) wait(events []unix.EpollEvent) (int, error) {
	var n int
	var werr error
	err := d.epRC.Read(func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])),
			uintptr(len(events)), 0, 0, 0) // timeout 0: never blocks
		n = int(r)
		if e != 0 {
			n = 0
			if e != unix.EINTR {
				werr = e
			}
		}
		return n > 0 || werr != nil
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// fromClients handles one batch from the listener (d.mu held).
func (d *dataPlane) fromClients(now time.Time) {
	n, err := d.in.recv(d.lis.fd, dpBatch)
	if err != nil {
		return // EAGAIN, or an error the next round will see again
	}
	for i := range n {
		b, from := d.in.msg(i)
		if !from.IsValid() {
			continue
		}
		if c, payload := d.channelData(b, from); c != nil {
			d.toPeer(c, payload, now)
			continue
		}
		select {
		case d.lis.ctl <- slowPkt{b: append([]byte(nil), b...), from: from}:
		default: // pion is behind: drop, as a full socket buffer would
		}
	}
}

// channelData returns the bound channel a ChannelData message from a
// client is for and its payload, or nil if b is not one or pion has not
// bound it for this client.
func (d *dataPlane) channelData(b []byte, from netip.AddrPort) (*fastChan, []byte) {
	num, payload, ok := parseChannelData(b)
	if !ok {
		return nil, nil
	}
	return d.chans[chanKey{from, num}], payload
}

// toPeer relays a client's channel payload to the channel's peer.
func (d *dataPlane) toPeer(c *fastChan, p []byte, now time.Time) {
	r, st := c.relay, &d.s.stats
	if !c.policyOK || d.s.toSelf(c.peer) {
		st.dropped[dropPolicy].Add(1)
		return
	}
	if !r.toPeer.allow(now, len(p)) {
		st.dropped[dropRate].Add(1)
		return
	}
	if r.fd < 0 || sendto(r.fd, p, &c.peerRaw) != nil {
		return
	}
	st.toPeerPackets.Add(1)
	st.toPeerBytes.Add(uint64(len(p)))
	d.fastPackets.Add(1)
}

// fromPeers handles one batch from a relayed socket (d.mu held).
func (d *dataPlane) fromPeers(r *relayConn, now time.Time) {
	n, err := d.rin.recv(r.fd, dpBatch)
	if err != nil {
		return
	}
	st := &d.s.stats
	for i := range n {
		b, from := d.rin.msg(i)
		if !from.IsValid() {
			continue
		}
		r.mu.RLock()
		_, perm := r.perms[from.Addr()]
		num, bound := r.chans[from]
		client := r.client
		r.mu.RUnlock()
		if !perm {
			continue // pion would drop it too, after counting nothing
		}
		if !r.toClient.allow(now, len(b)) {
			st.dropped[dropRate].Add(1)
			continue
		}
		if !bound || client.len == 0 {
			select { // a Data indication: pion builds it
			case r.slow <- slowPkt{b: append([]byte(nil), b...), from: from}:
			default:
			}
			continue
		}
		d.queueToClient(num, b, &client)
		st.toClientPackets.Add(1)
		st.toClientBytes.Add(uint64(len(b)))
		d.fastPackets.Add(1)
	}
}

// queueToClient frames p as ChannelData (padded to 4 bytes, as pion
// does) for the next sendmmsg on the listener.
func (d *dataPlane) queueToClient(num uint16, p []byte, to *rawAddr) {
	if len(p) > dpBufSize-chanHeader-3 {
		return
	}
	if d.out.n == dpBatch {
		d.flushOut()
	}
	i := d.out.n
	l := len(appendChannelData(d.out.bufs[i][:0], num, p))
	d.out.iovs[i].SetLen(l)
	d.out.names[i] = to.sa
	d.out.hdrs[i].Hdr.Namelen = to.len
	d.out.n++
}

func (d *dataPlane) flushOut() {
	if d.out.n > 0 {
		d.out.flush(d.lis.fd)
	}
}

// openRelay opens a relayed socket at bind (port 0: any free port), not
// yet registered with the loop.
func (d *dataPlane) openRelay(bind netip.AddrPort) (relaySocket, error) {
	fd, fam, err := udpSocket(bind, false)
	if err != nil {
		return relaySocket{}, err
	}
	local, err := localAddr(fd)
	if err != nil {
		unix.Close(fd)
		return relaySocket{}, err
	}
	return relaySocket{fd: fd, fam: fam, bound: net.UDPAddrFromAddrPort(local)}, nil
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// register adds r's socket to the loop.
func (d *dataPlane) register(r *relayConn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errDataPlaneClosed
	}
	d.nextID++
	if d.nextID <= 0 {
		d.nextID = 1
	}
	r.id = d.nextID
	if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, r.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: r.id}); err != nil {
		return fmt.Errorf("turn relay epoll add: %w", err)
	}
	d.relays[r.id] = r
	return nil
}

// unregister removes r's socket and channels from the loop and closes the
// socket; the loop cannot be using it (it holds d.mu while it does).
func (d *dataPlane) unregister(r *relayConn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.relays[r.id] == r {
		delete(d.relays, r.id)
		if !d.closed {
			unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, r.fd, nil)
		}
	}
	for k, c := range d.chans {
		if c.relay == r {
			delete(d.chans, k)
		}
	}
	r.fdMu.Lock()
	defer r.fdMu.Unlock()
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// bindChannel records a channel pion bound on relay r for client.
func (d *dataPlane) bindChannel(r *relayConn, client, peer netip.AddrPort, num uint16) {
	peerRaw, err := rawFromAddr(peer, r.fam)
	if err != nil {
		return // pion's path still serves it
	}
	clientRaw, err := rawFromAddr(client, d.lis.fam)
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.relays[r.id] != r {
		return // closed meanwhile
	}
	d.chans[chanKey{client, num}] = &fastChan{relay: r, peer: peer, peerRaw: peerRaw,
		policyOK: d.s.s.policy.Check(peer.Addr()) == nil}
	r.mu.Lock()
	r.chans[peer] = num
	r.client = clientRaw
	r.mu.Unlock()
}

// unbindChannel forgets a channel pion removed.
func (d *dataPlane) unbindChannel(r *relayConn, client, peer netip.AddrPort, num uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.chans[chanKey{client, num}]; c != nil && c.relay == r {
		delete(d.chans, chanKey{client, num})
	}
	r.mu.Lock()
	if r.chans[peer] == num {
		delete(r.chans, peer)
	}
	r.mu.Unlock()
}

// fastListener is the UDP listener pion sees: it reads what the loop hands
// it and writes on the raw socket.
type fastListener struct {
	d     *dataPlane
	fam   int
	local *net.UDPAddr
	ctl   chan slowPkt

	fdMu   sync.RWMutex // guards fd against close while a write uses it
	fd     int
	once   sync.Once
	closed chan struct{}
}

func (l *fastListener) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-l.ctl:
		return copy(b, p.b), net.UDPAddrFromAddrPort(p.from), nil
	case <-l.closed:
		return 0, nil, net.ErrClosed
	}
}

func (l *fastListener) WriteTo(b []byte, addr net.Addr) (int, error) {
	to, err := rawFromAddr(listenerAddr(addr), l.fam)
	if err != nil {
		return 0, err
	}
	l.fdMu.RLock()
	defer l.fdMu.RUnlock()
	if l.fd < 0 {
		return 0, net.ErrClosed
	}
	if err := sendto(l.fd, b, &to); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: l.local, Addr: addr, Err: err}
	}
	return len(b), nil
}

// Close stops the data plane and closes the socket.
func (l *fastListener) Close() error {
	l.once.Do(func() {
		l.d.stop()
		close(l.closed)
		l.closeFD()
	})
	return nil
}

func (l *fastListener) closeFD() {
	l.fdMu.Lock()
	defer l.fdMu.Unlock()
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
}

func (l *fastListener) LocalAddr() net.Addr              { return l.local }
func (l *fastListener) SetDeadline(time.Time) error      { return errors.ErrUnsupported }
func (l *fastListener) SetReadDeadline(time.Time) error  { return errors.ErrUnsupported }
func (l *fastListener) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }
