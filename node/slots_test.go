package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/parley-net/parley/supernode"
)

// startNodeOn starts a node listening on TCP on ip, a loopback address of
// its own (all of 127.0.0.0/8 is loopback on Linux, and a TCP host dials
// from the address it listens on; QUIC would dial from 127.0.0.1), with mod
// applied to its config.
func startNodeOn(t *testing.T, home, ip string, sn *supernode.Supernode, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{Home: home, Listen: []string{"/ip4/" + ip + "/tcp/0"},
		Bootstrap: []peer.AddrInfo{sn.AddrInfo()}, RetryInterval: 100 * time.Millisecond,
		BootstrapTimeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	return startNodeWith(t, cfg)
}

// halfFrames is an attacker: identities hosts on ip, each opening perID
// chat streams to victim and sending half a frame header on each. It
// returns the streams victim kept open (the rest it reset).
func halfFrames(t *testing.T, ip string, identities, perID int, victim *Node) (held []network.Stream) {
	t.Helper()
	return halfStreams(t, ChatProtocol, ip, identities, perID, victim)
}

// halfStreams is halfFrames on any protocol of wire frames.
func halfStreams(t *testing.T, proto protocol.ID, ip string, identities, perID int, victim *Node) (held []network.Stream) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < identities; i++ {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/"+ip+"/tcp/0"), libp2p.DisableMetrics())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		if err := h.Connect(ctx, peer.AddrInfo{ID: victim.ID(), Addrs: victim.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < perID; j++ {
			s, err := h.NewStream(ctx, victim.ID(), proto)
			if err != nil {
				continue
			}
			s.Write([]byte{0, 0}) // two of the four length bytes, then nothing
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A refused stream is reset at once; a held one stays silent.
				s.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := s.Read(make([]byte, 1)); isTimeout(err) {
					s.SetReadDeadline(time.Time{})
					mu.Lock()
					held = append(held, s)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return held
}

// isTimeout tells a read that hit its deadline (the stream is still open)
// from a reset.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// TestAttackChatSlotsFromOneIP: 20 identities × 4 half-sent frames from one
// address must not hold every chat slot of bob: carol, from another address,
// still gets her message through directly. (The frame deadline is set long
// here so that only the per-IP limit is at work.)
func TestAttackChatSlotsFromOneIP(t *testing.T) {
	sn := startSupernode(t)
	bob := startNodeOn(t, initHome(t, "bob"), "127.0.0.1", sn, func(c *Config) { c.ChatFrameTimeout = time.Minute })
	carol := startNodeOn(t, initHome(t, "carol"), "127.0.0.3", sn, nil)
	held := halfFrames(t, "127.0.0.2", 20, 4, bob)
	if len(held) == 0 || len(held) > DefaultChatStreamsPerIP {
		t.Fatalf("one address holds %d chat slots, limit %d", len(held), DefaultChatStreamsPerIP)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := carol.Send(ctx, "bob", "hello bob, are you there?")
	if err != nil || len(res.Delivered) != 1 {
		t.Fatalf("carol's message while bob is under attack: %+v %v", res, err)
	}
}

// TestHalfSentFrameTimesOut: a chat frame that has begun must be whole
// within ChatFrameTimeout, or the stream is reset and its slot freed; a
// stream that has sent nothing yet may wait for the idle timeout.
func TestHalfSentFrameTimesOut(t *testing.T) {
	sn := startSupernode(t)
	bob := startNodeOn(t, initHome(t, "bob"), "127.0.0.1", sn, func(c *Config) { c.ChatFrameTimeout = 300 * time.Millisecond })
	held := halfFrames(t, "127.0.0.2", 1, 1, bob)
	// Within the 1 s probe the half frame outlived its 300 ms: it must have
	// been reset by then.
	if len(held) != 0 {
		t.Fatalf("a half-sent frame held its slot for a second (frame timeout 300 ms)")
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.2/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	if err := h.Connect(ctx, peer.AddrInfo{ID: bob.ID(), Addrs: bob.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, bob.ID(), ChatProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := s.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("an idle stream was cut before the idle timeout: %v", err)
	}
}

func TestFrameBuffered(t *testing.T) {
	cases := []struct {
		name  string
		bytes []byte // what is buffered after the first byte (0x00)
		want  bool
	}{
		{"header only partly", []byte{0, 2}, false},
		{"header, no payload", []byte{0, 0, 2}, false},
		{"header, part of payload", []byte{0, 0, 2, 'a'}, false},
		{"whole frame", []byte{0, 0, 2, 'a', 'b'}, true},
		{"whole frame and more", []byte{0, 0, 2, 'a', 'b', 0, 0}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(tc.bytes))
			br.Peek(len(tc.bytes)) // fill the buffer
			if got := frameBuffered(0, br); got != tc.want {
				t.Fatalf("frameBuffered = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAttackCallSlotsFromOneIP: 9 identities × 2 half-sent invites from one
// address (enough to fill all 16 call slots by per-peer limits alone) hold
// at most callStreamsPerIP of bob's call slots, and a real call from another
// address still rings. (A half-sent invite is dropped after 10 s anyway, and
// a call nobody answers frees its slot after the ring timeout.)
func TestAttackCallSlotsFromOneIP(t *testing.T) {
	sn := startSupernode(t)
	media := func(c *Config) { c.Media = loopbackMedia }
	bob := startNodeOn(t, initHome(t, "bob"), "127.0.0.1", sn, media)
	alice := startNodeOn(t, initHome(t, "alice"), "127.0.0.3", sn, media)
	held := halfStreams(t, CallProtocol, "127.0.0.2", 9, 2, bob)
	if len(held) == 0 || len(held) > callStreamsPerIP {
		t.Fatalf("one address holds %d call slots, limit %d", len(held), callStreamsPerIP)
	}
	ev, stop := bob.Subscribe()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := alice.Call(ctx, "bob", CallOptions{})
	if err != nil {
		t.Fatalf("alice's call while bob is under attack: %v", err)
	}
	defer c.Hangup()
	waitCall(t, ev, "alice's call ringing at bob", func(ci CallInfo) bool { return ci.Peer == "alice" && ci.State == CallRinging })
}
