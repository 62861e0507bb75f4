package discovery

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/parley-net/parley/internal/wire"
)

// ServicesProtocol is how a supernode tells a connected node which of its
// NAT-traversal services it runs. The supernode writes one frame (at most
// maxServicesFrame bytes) and closes the stream.
const ServicesProtocol = "/parley/services/1.0.0"

const maxServicesFrame = 4 << 10

// Services are a supernode's NAT-traversal services. Ports are on the IP
// address the node reached the supernode at.
type Services struct {
	// STUNPort is the UDP port of its STUN server; 0 means none.
	STUNPort int `json:"stun_port,omitempty"`
}

// ServeServices answers ServicesProtocol on h.
func ServeServices(h host.Host, svc Services) {
	h.SetStreamHandler(ServicesProtocol, func(s network.Stream) {
		s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := wire.WriteJSON(s, svc, maxServicesFrame); err != nil {
			s.Reset()
			return
		}
		s.Close()
	})
}

// QueryServices asks a connected supernode for its services and returns the
// STUN URLs they make, on the IP the node reached the supernode at.
func QueryServices(ctx context.Context, h host.Host, sn peer.ID) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.NewStream(ctx, sn, ServicesProtocol)
	if err != nil {
		return nil, fmt.Errorf("ask supernode %s for services: %w", sn.ShortString(), err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var svc Services
	if err := wire.ReadJSON(s, &svc, maxServicesFrame); err != nil {
		s.Reset()
		return nil, fmt.Errorf("services of %s: %w", sn.ShortString(), err)
	}
	ip := remoteIP(s.Conn().RemoteMultiaddr())
	if ip == nil {
		return nil, nil // reached through a relay: its services are not ours to use
	}
	var urls []string
	if svc.STUNPort > 0 && svc.STUNPort < 65536 {
		urls = append(urls, "stun:"+net.JoinHostPort(ip.String(), fmt.Sprint(svc.STUNPort)))
	}
	return urls, nil
}

func remoteIP(m ma.Multiaddr) net.IP {
	if _, err := m.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return nil
	}
	ip, err := manet.ToIP(m)
	if err != nil {
		return nil
	}
	return ip
}
