package node

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/media"
)

// TestCallMetrics: a call that had audio and was hung up counts as ended
// by "hung_up" on the direct tier, with a setup time and a MOS; a lookup
// counts; the metrics are served over HTTP with go-libp2p's own.
func TestCallMetrics(t *testing.T) {
	sn := startSupernode(t)
	reg := prometheus.NewRegistry()
	alice := startNodeWith(t, Config{Home: initHome(t, "alice"), Listen: nodetest.Loopback,
		Bootstrap: []peer.AddrInfo{sn.AddrInfo()}, Media: loopbackMedia,
		Registerer: reg, MetricsAddr: "127.0.0.1:0"})
	auto := func(CallInfo) (CallOptions, error) { return CallOptions{Source: media.SpeechLikeSource(1)}, nil }
	startCallNode(t, initHome(t, "bob"), sn, auto)

	ev, stop := alice.Subscribe()
	defer stop()
	c, err := alice.Call(context.Background(), "bob", CallOptions{Source: media.SpeechLikeSource(2)})
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, ev, "audio", func(ci CallInfo) bool { return ci.State == CallActive && ci.SetupMS > 0 })
	time.Sleep(500 * time.Millisecond)
	c.Hangup()
	<-c.Done()

	resp, err := http.Get("http://" + alice.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`parley_calls_ended_total{reason="hung_up",tier="direct"} 1`, "parley_outbox_pending 0", "parley_call_setup_seconds_count 1", "parley_call_mos_count 1", `parley_dht_lookups_total{result="ok"}`, "libp2p_swarm_connections_opened_total", "libp2p_rcmgr_"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
