package turnrelay

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/metrics"
)

type reason int

// Why a request was refused.
const (
	reasonAuth   reason = iota // bad, expired, future-dated or unknown credential; wrong realm; bad MESSAGE-INTEGRITY
	reasonPolicy               // CreatePermission or ChannelBind toward a refused peer address
	reasonQuota                // allocation or connection over a quota
	numReasons
)

var reasonNames = [numReasons]string{"auth", "policy", "quota"}

type dropReason int

// Why a relayed datagram was dropped.
const (
	dropRate   dropReason = iota // over the allocation's byte or packet rate
	dropPolicy                   // to a refused address or our own listener (defence in depth)
	numDrops
)

var dropNames = [numDrops]string{"rate", "policy"}

// counters are the server's statistics. The hot path only does atomic
// adds; Prometheus reads them when scraped.
type counters struct {
	allocations                    atomic.Int64
	toPeerPackets, toPeerBytes     atomic.Uint64
	toClientPackets, toClientBytes atomic.Uint64
	refused                        [numReasons]atomic.Uint64
	dropped                        [numDrops]atomic.Uint64
}

// Stats is a snapshot of a Server's counters since it started.
type Stats struct {
	// Allocations is the number of live allocations.
	Allocations int
	// ToPeerPackets and ToPeerBytes were relayed from clients to peers;
	// ToClientPackets and ToClientBytes from peers to clients (payload
	// bytes, without TURN framing).
	ToPeerPackets, ToPeerBytes     uint64
	ToClientPackets, ToClientBytes uint64
	// RefusedAuth, RefusedPolicy and RefusedQuota count refused requests
	// (and, for quota, refused TCP/TLS connections).
	RefusedAuth, RefusedPolicy, RefusedQuota uint64
	// DroppedRate and DroppedPolicy count relayed datagrams dropped for the
	// allocation's rate cap and for the address policy.
	DroppedRate, DroppedPolicy uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Allocations:   int(c.allocations.Load()),
		ToPeerPackets: c.toPeerPackets.Load(), ToPeerBytes: c.toPeerBytes.Load(),
		ToClientPackets: c.toClientPackets.Load(), ToClientBytes: c.toClientBytes.Load(),
		RefusedAuth: c.refused[reasonAuth].Load(), RefusedPolicy: c.refused[reasonPolicy].Load(),
		RefusedQuota: c.refused[reasonQuota].Load(),
		DroppedRate:  c.dropped[dropRate].Load(), DroppedPolicy: c.dropped[dropPolicy].Load(),
	}
}

// Metric names (all prefixed parley_turn_).
func (s *Server) registerMetrics(reg prometheus.Registerer) (unregister func(), err error) {
	c := &s.stats
	u64 := func(v *atomic.Uint64) func() float64 { return func() float64 { return float64(v.Load()) } }
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_turn_allocations",
			Help: "Live TURN allocations."}, func() float64 { return float64(c.allocations.Load()) }),
	}
	for _, d := range []struct {
		dir        string
		pkts, byts *atomic.Uint64
	}{{"to_peer", &c.toPeerPackets, &c.toPeerBytes}, {"to_client", &c.toClientPackets, &c.toClientBytes}} {
		l := prometheus.Labels{"direction": d.dir}
		cs = append(cs,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_turn_relayed_packets_total",
				Help: "Datagrams relayed.", ConstLabels: l}, u64(d.pkts)),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_turn_relayed_bytes_total",
				Help: "Payload bytes relayed.", ConstLabels: l}, u64(d.byts)))
	}
	for r := range numReasons {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_turn_refusals_total",
			Help:        "Requests refused, by reason (auth, policy, quota).",
			ConstLabels: prometheus.Labels{"reason": reasonNames[r]}}, u64(&c.refused[r])))
	}
	for d := range numDrops {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_turn_dropped_packets_total",
			Help:        "Relayed datagrams dropped, by reason (rate, policy).",
			ConstLabels: prometheus.Labels{"reason": dropNames[d]}}, u64(&c.dropped[d])))
	}
	return metrics.RegisterAll(reg, cs)
}
