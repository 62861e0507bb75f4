package supernode

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"

	"github.com/parley-net/parley/discovery"
)

func TestSupernodeServicesAndMetrics(t *testing.T) {
	sn := startSupernodeWith(t, Config{MetricsAddr: "127.0.0.1:0", STUNAddr: "127.0.0.1:0"})
	for _, a := range sn.Addrs() {
		if !strings.Contains(a.String(), "/p2p/"+sn.ID().String()) {
			t.Fatalf("address %s lacks /p2p/<id>: users could not copy it as a bootstrap address", a)
		}
	}

	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Connect(context.Background(), sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	urls, err := discovery.QueryServices(context.Background(), h, sn.ID())
	if err != nil {
		t.Fatal(err)
	}
	want := "stun:127.0.0.1:" + strings.Split(sn.STUNAddr().String(), ":")[1]
	if len(urls) != 1 || urls[0] != want {
		t.Fatalf("services %v, want [%s]", urls, want)
	}

	resp, err := http.Get("http://" + sn.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "parley_supernode_connected_peers 1") {
		t.Fatalf("metrics do not count the connected peer:\n%.2000s", body)
	}
	for _, m := range []string{`parley_mailbox_refused_total{reason="source-prefix"} 0`, "parley_mailbox_bytes_stored 0",
		`parley_mailbox_stored_total{kind="deposit"} 0`, "parley_mailbox_fetched_total 0", `parley_stun_requests_total{result="answered"} 0`,
		"libp2p_rcmgr_", "libp2p_relaysvc_", "go_goroutines", "process_"} {
		if !strings.Contains(string(body), m) {
			t.Fatalf("no %s in the metrics:\n%.3000s", m, body)
		}
	}
}
