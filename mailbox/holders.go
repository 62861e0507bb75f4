package mailbox

import (
	"net"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// PickHolders chooses the k holders of an account's mail from candidates
// sorted closest first to its Key: the closest supernode of each site
// (network, see Site) first, so that losing every supernode of one site
// (one data centre) never takes every copy; then, when there are fewer
// than k sites, the closest of the rest. Devices and supernodes both choose
// with it, so they agree on the holders as long as they agree on the
// candidates and their addresses. A candidate whose site is "" is a site of
// its own.
func PickHolders(candidates []peer.ID, k int, site func(peer.ID) string) []peer.ID {
	if k <= 0 {
		return nil
	}
	picked := make([]peer.ID, 0, k)
	taken := map[peer.ID]bool{}
	sites := map[string]bool{}
	for _, p := range candidates {
		if len(picked) == k {
			break
		}
		s := site(p)
		if s != "" && sites[s] {
			continue
		}
		sites[s] = true
		taken[p] = true
		picked = append(picked, p)
	}
	for _, p := range candidates {
		if len(picked) == k {
			break
		}
		if !taken[p] {
			taken[p] = true
			picked = append(picked, p)
		}
	}
	// Keep the holders in closeness order.
	slices.SortStableFunc(picked, func(a, b peer.ID) int {
		return slices.Index(candidates, a) - slices.Index(candidates, b)
	})
	return picked
}

// Site names the network a peer's addresses are in, as the DHT's diversity
// filter groups them: the /24 of an IPv4 address, the /48 of an IPv6 one.
// It looks at public addresses if the peer has any, else private ones,
// else loopback ones (circuit addresses skipped), and takes the lowest
// network among them so that every observer names a peer's site alike; ""
// when no address is an IP address. Note that all of 127.0.0.0/8 is loopback on
// Linux: 127.0.1.x and 127.0.2.x are different sites on one machine.
func Site(addrs []ma.Multiaddr) string {
	var sites []string
	best := 3
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		ip, err := manet.ToIP(a)
		if err != nil {
			continue
		}
		class := 2 // loopback and the rest
		switch {
		case manet.IsPublicAddr(a):
			class = 0
		case manet.IsPrivateAddr(a) && !ip.IsLoopback():
			class = 1
		}
		if class > best {
			continue
		}
		if class < best {
			best, sites = class, nil
		}
		if v4 := ip.To4(); v4 != nil {
			sites = append(sites, (&net.IPNet{IP: v4.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}).String())
		} else {
			sites = append(sites, (&net.IPNet{IP: ip.Mask(net.CIDRMask(48, 128)), Mask: net.CIDRMask(48, 128)}).String())
		}
	}
	if len(sites) == 0 {
		return ""
	}
	return slices.Min(sites)
}
