package p2plimits

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

func TestLimitsNarrowPerPeer(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		inbound int
		wantErr bool
	}{
		{"defaults", Config{}, DefaultStreamsInboundPerPeer, false},
		{"narrower", Config{StreamsInboundPerPeer: 3, StreamsPerPeer: 5}, 3, false},
		{"inbound above total", Config{StreamsInboundPerPeer: 10, StreamsPerPeer: 5}, 0, true},
		{"negative", Config{ConnsPerIP: -1}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Limits(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Limits: %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			p := l.ToPartialLimitConfig()
			if got := int(p.PeerDefault.StreamsInbound); got != tc.inbound {
				t.Fatalf("inbound streams per peer %d, want %d", got, tc.inbound)
			}
			if p.System.StreamsInbound != 0 && int(p.System.StreamsInbound) <= tc.inbound {
				t.Fatalf("per-peer inbound %d not below the host's %d", tc.inbound, p.System.StreamsInbound)
			}
		})
	}
}

// TestStreamsPerPeerEnforced: a peer that opens more inbound streams than
// its limit gets the extra ones refused by a real host.
func TestStreamsPerPeerEnforced(t *testing.T) {
	opt, err := Option(Config{StreamsInboundPerPeer: 3, StreamsPerPeer: 6})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const proto = protocol.ID("/parley/test-hold/1.0.0")
	var held atomic.Int32
	hold := make(chan struct{})
	defer close(hold)
	srv.SetStreamHandler(proto, func(s network.Stream) { held.Add(1); <-hold; s.Reset() })
	cli, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := 0; i < 6; i++ {
		s, err := cli.NewStream(ctx, srv.ID(), proto)
		if err != nil {
			refused++
			continue
		}
		s.Write([]byte{1})
		// A refused stream is reset at once; a held one stays silent.
		s.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			refused++
		}
	}
	if h := held.Load(); h > 3 || refused < 3 {
		t.Fatalf("%d streams held by one peer (%d refused), limit 3", h, refused)
	}
}
