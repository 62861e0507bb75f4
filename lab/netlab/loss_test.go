package netlab

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSetLoss sends a fixed number of datagrams through a NAT with 30 %
// loss, and from a public host with 30 % loss at the host, and checks that
// about that share is lost each way; loss 0 must restore every datagram.
func TestSetLoss(t *testing.T) {
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupWait)
	defer cancel()
	pub := must[*Host](t)(l.AddPublicHost(ctx, "pub"))
	nat := must[*Host](t)(l.AddNATHost(ctx, "nat", FullCone))
	p, n := listenUDP(t, pub), listenUDP(t, nat)
	// Open the NAT mapping and learn where pub sees nat.
	natPublic := mustDeliver(t, "open mapping", n, endpoint(pub, p), p)

	const sent = 400
	count := func(from, to *Host, pct int) int {
		t.Helper()
		src, dst := n, p
		addr := endpoint(pub, p)
		if from == pub {
			src, dst, addr = p, n, natPublic
		}
		if err := l.SetLoss(ctx, to, pct); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := l.SetLoss(ctx, to, 0); err != nil {
				t.Error(err)
			}
		}()
		// Read while sending.
		got := make(chan int)
		go func() {
			n, buf := 0, make([]byte, 16)
			for {
				// An idle gap after the last send means the rest were
				// dropped.
				dst.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, _, err := dst.ReadFromUDPAddrPort(buf); err != nil {
					got <- n
					return
				}
				n++
			}
		}()
		// Paced, a datagram a millisecond: a burst of 400 overruns the
		// receiving socket's buffer whenever the reader is off the CPU for
		// a moment (a loaded machine lost a quarter with no loss set).
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for range sent {
			<-tick.C
			if _, err := src.WriteToUDPAddrPort([]byte("x"), addr); err != nil {
				t.Error(err)
				break
			}
		}
		return <-got
	}
	for _, tc := range []struct {
		name     string
		from, at *Host
	}{
		{"at the NAT, inbound", pub, nat},
		{"at the NAT, outbound", nat, nat},
		{"at a public host", nat, pub},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := count(tc.from, tc.at, 30)
			// 400 draws at 30 %: 120 ± 9 lost (1 sd); 60 to 180 is > 6 sd.
			if lost := sent - got; lost < 60 || lost > 180 {
				t.Errorf("%d of %d datagrams lost with 30%% loss", lost, sent)
			}
			if got := count(tc.from, tc.at, 0); got != sent {
				t.Errorf("%d of %d datagrams arrived with the loss removed", got, sent)
			}
		})
	}
	if err := l.SetLoss(ctx, nat, 101); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("SetLoss(101%%) = %v, want a range error", err)
	}
}
