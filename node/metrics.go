package node

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/internal/metrics"
)

// nodeMetrics are the device's Prometheus metrics (Config.Registerer). Every
// label takes values from a fixed set, so a peer cannot grow the series.
type nodeMetrics struct {
	callsEnded  *prometheus.CounterVec // reason, tier
	callSetup   prometheus.Histogram
	callMOS     prometheus.Histogram
	iceRestarts prometheus.Counter
	deposits    *prometheus.CounterVec // result
	fetches     *prometheus.CounterVec // result
	fetched     prometheus.Counter
	lookups     *prometheus.CounterVec // result
	pathChanges *prometheus.CounterVec // from, to
}

// Call end reasons counted by name; any other reason (an error's text)
// counts as "other".
var knownReasons = map[string]bool{
	"hung up": true, "declined": true, "cancelled": true, "busy": true, "no answer": true, "timeout": true,
	"connection lost": true, "media closed": true, "no path": true, "unreachable": true, "answered elsewhere": true,
}

func newMetrics() *nodeMetrics {
	return &nodeMetrics{
		callsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_calls_ended_total",
			Help: "Calls ended, by why and by the path tier carrying the media at the end (direct, supernode, cloud, relay, none)."},
			[]string{"reason", "tier"}),
		callSetup: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_call_setup_seconds",
			Help:    "Time from a call's start to its first decoded audio, of calls that had audio.",
			Buckets: []float64{0.25, 0.5, 1, 1.5, 2, 3, 5, 8, 13, 20, 30}}),
		callMOS: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_call_mos",
			Help:    "E-model MOS of what this side heard, at the end of calls that had audio.",
			Buckets: []float64{1.5, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4}}),
		iceRestarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_call_ice_restarts_total",
			Help: "ICE restarts of ended calls (a path that died and was replaced)."}),
		deposits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_mailbox_deposits_total",
			Help: "Deposits of envelopes for one offline device at its mailboxes, by result (ok, error)."}, []string{"result"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_mailbox_fetches_total",
			Help: "Fetches of this device's mail from one mailbox, by result (ok, error)."}, []string{"result"}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_mailbox_fetched_envelopes_total",
			Help: "Envelopes fetched from mailboxes."}),
		pathChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_call_path_changes_total",
			Help: "Moves of a live call's media from one tier to another (a failover, or an upgrade to direct), sampled every second."},
			[]string{"from", "to"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_dht_lookups_total",
			Help: "Handle lookups in the DHT, by result (ok, not_found, error)."}, []string{"result"}),
	}
}

// serveMetrics listens on Config.MetricsAddr and serves the metrics.
func (n *Node) serveMetrics() error {
	reg, g, err := metrics.Registry(n.cfg.Registerer, n.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.cfg.Registerer = reg
	n.metricsSrv, err = metrics.Serve(n.cfg.MetricsAddr, g)
	return err
}

// MetricsAddr is where the node serves metrics, or nil.
func (n *Node) MetricsAddr() net.Addr { return n.metricsSrv.Addr() }

// register adds the metrics, and the outbox depth read from store, to reg.
func (m *nodeMetrics) register(reg prometheus.Registerer, store *Store) error {
	outbox := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_outbox_pending",
		Help: "Envelopes in the outbox not yet delivered nor left at a mailbox."},
		func() float64 {
			c, err := store.OutboxPending(context.Background())
			if err != nil {
				return -1
			}
			return float64(c)
		})
	for _, c := range []prometheus.Collector{m.callsEnded, m.callSetup, m.callMOS, m.iceRestarts,
		m.deposits, m.fetches, m.fetched, m.lookups, m.pathChanges, outbox} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// callEnded counts an ended call from its final snapshot.
func (m *nodeMetrics) callEnded(info CallInfo) {
	reason := info.Reason
	if !knownReasons[reason] {
		reason = "other"
	}
	tier := TierNone
	if st := info.Stats; st != nil {
		if st.Tier != "" {
			tier = st.Tier
		}
		m.iceRestarts.Add(float64(st.ICERestarts))
		if st.PacketsIn > 0 && st.MOS > 0 {
			m.callMOS.Observe(st.MOS)
		}
	}
	m.callsEnded.WithLabelValues(strings.ReplaceAll(reason, " ", "_"), tier).Inc()
	if info.SetupMS > 0 {
		m.callSetup.Observe(info.SetupMS / 1000)
	}
}

// pathLoop samples the live calls every second and counts each move of a
// call's media to another tier. A gap (TierNone: nothing carries media)
// is not a tier: the move is counted when media flows again, on whatever
// tier that is.
func (n *Node) pathLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := map[string]string{} // call ID -> the tier that last carried its media
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.calls.mu.Lock()
		live := make([]*Call, 0, len(n.calls.byID))
		for _, c := range n.calls.byID {
			live = append(live, c)
		}
		n.calls.mu.Unlock()
		seen := make(map[string]string, len(live))
		for _, c := range live {
			info := c.Info()
			tier := last[c.ID()]
			if st := info.Stats; st != nil && st.Tier != "" && st.Tier != TierNone {
				if tier != "" && tier != st.Tier {
					n.metrics.pathChanges.WithLabelValues(tier, st.Tier).Inc()
				}
				tier = st.Tier
			}
			if tier != "" {
				seen[c.ID()] = tier
			}
		}
		last = seen
	}
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
