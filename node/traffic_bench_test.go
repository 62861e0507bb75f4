package node

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	lpmetrics "github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/parley-net/parley/discovery"
)

// dhtCounter counts, exactly and at once, the bytes and writes on the
// DHT's protocol (libp2p's BandwidthCounter only totals them once a second).
type dhtCounter struct {
	*lpmetrics.BandwidthCounter
	bytes, writes atomic.Int64
}

func (c *dhtCounter) count(size int64, proto protocol.ID) {
	if strings.HasPrefix(string(proto), discovery.ProtocolPrefix+"/kad/") {
		c.bytes.Add(size)
		c.writes.Add(1)
	}
}

func (c *dhtCounter) LogSentMessageStream(size int64, proto protocol.ID, p peer.ID) {
	c.count(size, proto)
	c.BandwidthCounter.LogSentMessageStream(size, proto, p)
}

func (c *dhtCounter) LogRecvMessageStream(size int64, proto protocol.ID, p peer.ID) {
	c.count(size, proto)
	c.BandwidthCounter.LogRecvMessageStream(size, proto, p)
}

// BenchmarkIdleDeviceDHTTraffic measures the DHT traffic one idle device
// costs, in networks of 5 and 20 supernodes (a publish stores at the 20
// closest): the bytes of one republish
// (store at the closest supernodes, then read back) and of one routing-table
// refresh, and their sum over an hour at the defaults (a republish every
// DefaultRepublishInterval, kad-dht's refresh every 10 min). Other prompts
// to republish (a supernode's return) come on top; the checks that trigger
// them are local and cost nothing on the wire.
//
//	go test -run '^$' -bench BenchmarkIdleDeviceDHTTraffic -benchtime 20x ./node/
func BenchmarkIdleDeviceDHTTraffic(b *testing.B) {
	for _, size := range []int{5, 20} {
		b.Run(fmt.Sprintf("supernodes=%d", size), func(b *testing.B) { benchIdleTraffic(b, size) })
	}
}

func benchIdleTraffic(b *testing.B, supernodes int) {
	var infos []peer.AddrInfo
	for i := 0; i < supernodes; i++ {
		sn := startSupernode(b)
		infos = append(infos, sn.AddrInfo())
	}
	bw := &dhtCounter{BandwidthCounter: lpmetrics.NewBandwidthCounter()}
	n := startNodeWith(b, Config{Home: initHome(b, "alice"), Bootstrap: infos, RepublishInterval: 24 * time.Hour, Bandwidth: bw})
	ctx := context.Background()
	if err := n.publish(ctx); err != nil { // the routing table is full from here on
		b.Fatal(err)
	}
	b.ResetTimer()
	bytes0, writes0 := bw.bytes.Load(), bw.writes.Load()
	for i := 0; i < b.N; i++ {
		if err := n.publish(ctx); err != nil {
			b.Fatal(err)
		}
	}
	pubBytes := float64(bw.bytes.Load()-bytes0) / float64(b.N)
	pubWrites := float64(bw.writes.Load()-writes0) / float64(b.N)
	bytes0, writes0 = bw.bytes.Load(), bw.writes.Load()
	refreshes := max(b.N/5, 1)
	for i := 0; i < refreshes; i++ {
		if err := <-n.dht.RefreshRoutingTable(); err != nil {
			b.Fatal(err)
		}
	}
	refBytes := float64(bw.bytes.Load()-bytes0) / float64(refreshes)
	refWrites := float64(bw.writes.Load()-writes0) / float64(refreshes)
	b.StopTimer()
	publishes, refreshesPerHour := float64(time.Hour/DefaultRepublishInterval), float64(time.Hour/(10*time.Minute))
	b.ReportMetric(pubBytes, "B/publish")
	b.ReportMetric(refBytes, "B/refresh")
	b.ReportMetric(pubBytes*publishes+refBytes*refreshesPerHour, "B/hour")
	b.ReportMetric(pubWrites*publishes+refWrites*refreshesPerHour, "writes/hour")
}
