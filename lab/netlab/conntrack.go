package netlab

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ctnetlink message type that deletes conntrack entries; with no tuple
// attribute it deletes all of the given family (linux/netfilter/
// nfnetlink_conntrack.h). x/sys/unix does not define it.
const ipctnlMsgCtDelete = 2

// flushConntrack deletes every IPv4 conntrack entry of the calling
// thread's network namespace, as `conntrack -F` does. Run it through doIn.
func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("conntrack flush: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return fmt.Errorf("conntrack flush: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("conntrack flush: bind: %w", err)
	}

	// struct nlmsghdr + struct nfgenmsg, no attributes.
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr+4)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], seq)
	msg[16] = unix.AF_INET
	msg[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("conntrack flush: send: %w", err)
	}

	// The kernel answers with one NLMSG_ERROR carrying 0 or -errno.
	buf := make([]byte, 4096)
	for range 8 {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("conntrack flush: receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("conntrack flush: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("conntrack flush: short ack")
			}
			if errno := int32(ne.Uint32(m.Data)); errno != 0 {
				return fmt.Errorf("conntrack flush: %w", unix.Errno(-errno))
			}
			return nil
		}
	}
	return fmt.Errorf("conntrack flush: no acknowledgement")
}
