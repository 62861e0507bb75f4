package wire

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

type testFrame struct {
	N    int    `json:"n"`
	Last string `json:"last,omitempty"`
}

const testProto = "/parley-test/linger/1"

// TestLastFrameSurvivesPeerClose is the refused call, on both of
// libp2p's stream transports: the callee writes its last frame (the
// reject) and ends its side while the caller is still sending (trickled
// candidates) and is slow to read. The caller must read that last frame:
// a caller whose failed write reset the stream threw it away and
// reported "connection lost" instead of why. The callee ends its side
// with WriteLoop and an Ending (the caller's writes keep arriving until
// it closes too), or, like a peer that closes both ways at once, with a
// plain Close (the caller's next write fails: QUIC's STOP_SENDING).
func TestLastFrameSurvivesPeerClose(t *testing.T) {
	for _, tr := range []struct{ name, listen string }{
		{"tcp", "/ip4/127.0.0.1/tcp/0"},
		{"quic", "/ip4/127.0.0.1/udp/0/quic-v1"},
	} {
		for _, hard := range []bool{false, true} {
			name := tr.name + "/graceful"
			if hard {
				name = tr.name + "/close-both-ways"
			}
			t.Run(name, func(t *testing.T) {
				a, b := testHost(t, tr.listen), testHost(t, tr.listen)
				calleeEnded := make(chan struct{}, 8)
				b.SetStreamHandler(testProto, func(s network.Stream) {
					callee(t, s, hard, calleeEnded)
				})
				if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
					t.Fatal(err)
				}
				for round := range 5 {
					last, writeErr := caller(t, a, b.ID())
					if last != "rejected" {
						t.Fatalf("round %d: the caller read %q, not the callee's last frame (its writes: %v)", round, last, writeErr)
					}
					if !hard && writeErr != nil {
						t.Errorf("round %d: a write failed while the callee lingered: %v", round, writeErr)
					}
					if !hard {
						select {
						case <-calleeEnded:
						case <-time.After(10 * time.Second):
							t.Fatalf("round %d: the callee's stream never ended", round)
						}
					}
				}
			})
		}
	}
}

// callee reads the invite and refuses it: one last frame, then its side
// closed (hard: the stream closed both ways at once).
func callee(t *testing.T, s network.Stream, hard bool, ended chan<- struct{}) {
	var f testFrame
	if err := ReadJSON(s, &f, 1024); err != nil {
		t.Errorf("callee: read the invite: %v", err)
		_ = s.Reset()
		return
	}
	if hard {
		if err := WriteJSON(s, testFrame{Last: "rejected"}, 1024); err != nil {
			t.Errorf("callee: %v", err)
		}
		_ = s.Close()
		return
	}
	end := NewEnding(s, 5*time.Second, func(f func()) { go f() }, func() { ended <- struct{}{} })
	out, quit := make(chan testFrame, 1), make(chan struct{})
	out <- testFrame{Last: "rejected"}
	close(quit)
	if err := WriteLoop(s, out, quit, 1024, 5*time.Second); err != nil {
		t.Errorf("callee: %v", err)
	}
	end.WriteEnded()
}

// caller sends an invite and then a frame a millisecond, reads only after
// 300 ms (a busy caller), and returns the last frame's word and the error
// of its writer, if a write failed.
func caller(t *testing.T, a host.Host, callee peer.ID) (last string, writeErr error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := a.NewStream(ctx, callee, testProto)
	if err != nil {
		t.Fatal(err)
	}
	end := NewEnding(s, 5*time.Second, func(f func()) { go f() }, nil)
	end.StartRead()
	out, quit := make(chan testFrame, 1024), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		writeErr = WriteLoop(s, out, quit, 1024, 5*time.Second)
		end.WriteEnded()
	}()
	stopFeed := make(chan struct{})
	go func() {
		defer wg.Done()
		for i := range 1000 {
			select {
			case out <- testFrame{N: i}:
			case <-stopFeed:
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond) // the caller is busy: its writes go on, it does not read
	for {
		var f testFrame
		err := ReadJSON(s, &f, 1024)
		if err != nil {
			end.ReadEnded()
			if !errors.Is(err, io.EOF) && last == "" {
				t.Logf("caller: read: %v", err)
			}
			break
		}
		last = f.Last
	}
	close(stopFeed)
	close(quit)
	wg.Wait()
	return last, writeErr
}

func testHost(t *testing.T, listen string) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings(listen), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// TestEndingResetsAPeerThatNeverCloses: a stranger that opens a stream,
// is refused and then neither closes nor stops sending holds the stream
// for the linger, not longer: it is reset, with a reader running (a call's
// link) or without one (a refused stream, drained).
func TestEndingResetsAPeerThatNeverCloses(t *testing.T) {
	const linger = 300 * time.Millisecond
	for _, reader := range []bool{true, false} {
		a, b := testHost(t, "/ip4/127.0.0.1/tcp/0"), testHost(t, "/ip4/127.0.0.1/tcp/0")
		ended := make(chan time.Duration, 1)
		b.SetStreamHandler(testProto, func(s network.Stream) {
			start := time.Now()
			end := NewEnding(s, linger, func(f func()) { go f() }, func() { ended <- time.Since(start) })
			if reader && end.StartRead() {
				go func() {
					_, _ = io.Copy(io.Discard, s)
					end.ReadEnded()
				}()
			}
			out, quit := make(chan testFrame, 1), make(chan struct{})
			out <- testFrame{Last: "rejected"}
			close(quit)
			_ = WriteLoop(s, out, quit, 1024, 5*time.Second)
			end.WriteEnded()
		})
		if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
			t.Fatal(err)
		}
		s, err := a.NewStream(context.Background(), b.ID(), testProto)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		go func() { // the stranger: sends forever, reads nothing, never closes
			for {
				select {
				case <-stop:
					return
				default:
				}
				if WriteJSON(s, testFrame{N: 1}, 1024) != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		select {
		case took := <-ended:
			if took < linger {
				t.Errorf("reader %v: ended after %v, before the linger", reader, took)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("reader %v: a peer that never closes held the stream past 10 s (linger %v)", reader, linger)
		}
		close(stop)
		_ = s.Reset()
	}
}
