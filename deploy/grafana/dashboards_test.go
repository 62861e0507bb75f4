// Package grafana holds the Grafana dashboards (JSON) of parley's roles:
// supernode-fleet.json (parley supernode --metrics), relay.json (parley
// relay --metrics) and devices.json (parley daemon --metrics). Its test
// checks every panel against the metrics the code registers.
package grafana

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/cloudrelay"
	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/internal/turnrelay"
	"github.com/parley-net/parley/node"
	"github.com/parley-net/parley/supernode"
)

// recorder is a registry that remembers the name of every metric
// registered with it, whether or not it has a sample yet (a vector with no
// label values gathers nothing).
type recorder struct {
	*prometheus.Registry
	mu    sync.Mutex
	names map[string]bool
}

func newRecorder() *recorder {
	return &recorder{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var names []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	err := r.Registry.Register(c)
	if _, dup := err.(prometheus.AlreadyRegisteredError); err == nil || dup {
		r.mu.Lock()
		for _, n := range names {
			r.names[n] = true
		}
		r.mu.Unlock()
	}
	return err
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// registered starts a real supernode (with STUN and TURN), cloud relay and
// node, each on 127.0.0.1 with its own recorder, and returns the metric
// names each registered.
func registered(t *testing.T) (sn, relay, daemon map[string]bool) {
	t.Helper()
	quiet := nodetest.Logger()
	lo := netip.MustParseAddr("127.0.0.1")
	snRec, relayRec, nodeRec := newRecorder(), newRecorder(), newRecorder()
	s := nodetest.Start(t, "supernode", func() (*supernode.Supernode, error) {
		return supernode.New(context.Background(), supernode.Config{Home: t.TempDir(), Listen: nodetest.Loopback,
			STUNAddr: "127.0.0.1:0", Registerer: snRec, Logger: quiet,
			TURN: &turnrelay.Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{lo}}})
	})
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	nodetest.Start(t, "cloud relay", func() (*cloudrelay.Relay, error) {
		return cloudrelay.Start(cloudrelay.Config{Key: key, Listen: nodetest.Loopback, Registerer: relayRec, Logger: quiet,
			TURN: turnrelay.Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{lo}, Secret: "a-cloud-secret-of-enough-length"}})
	})
	home := t.TempDir()
	if _, err := node.InitIdentity(home, "metrics", "metrics-laptop", time.Now()); err != nil {
		t.Fatal(err)
	}
	nodetest.Start(t, "node", func() (*node.Node, error) {
		return node.Start(context.Background(), node.Config{Home: home, Listen: nodetest.Loopback,
			Bootstrap: []peer.AddrInfo{s.AddrInfo()}, Registerer: nodeRec, Logger: quiet})
	})
	return snRec.names, relayRec.names, nodeRec.names
}

// dashboard is the part of a Grafana dashboard model the test reads.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	braces     = regexp.MustCompile(`\{[^}]*\}`)
	ranges     = regexp.MustCompile(`\[[^\]]*\]`)
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	keywords   = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "bool": true,
		"and": true, "or": true, "unless": true, "offset": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
	suffix = regexp.MustCompile(`_(bucket|sum|count)$`)
)

// metricNames are the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// clauses are gone, other than functions and keywords.
func metricNames(expr string) []string {
	e := quoted.ReplaceAllString(expr, " ")
	e = braces.ReplaceAllString(e, " ")
	e = ranges.ReplaceAllString(e, " ")
	e = grouping.ReplaceAllString(e, " ")
	var out []string
	for _, m := range identifier.FindAllStringSubmatch(e, -1) {
		if m[1] != "" || keywords[strings.ToLower(m[0])] {
			continue // a function or aggregation, or a keyword
		}
		out = append(out, m[0])
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`parley_turn_allocations{job=~"$job"}`, []string{"parley_turn_allocations"}},
		{`sum by (reason) (rate(parley_mailbox_refused_total{job=~"$job"}[5m]))`, []string{"parley_mailbox_refused_total"}},
		{`histogram_quantile(0.95, sum by (le) (rate(parley_call_setup_seconds_bucket[15m])))`, []string{"parley_call_setup_seconds_bucket"}},
		{`sum(rate(a_sum[1h])) / sum(rate(a_count[1h])) > bool 1`, []string{"a_sum", "a_count"}},
	} {
		if got := metricNames(tc.expr); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// TestDashboards loads every dashboard in this folder and checks that each
// panel has a query, and that every metric each query (and each template
// variable) names is one the code registers: the names are gathered from
// a real supernode, cloud relay and node.
func TestDashboards(t *testing.T) {
	sn, relay, daemon := registered(t)
	sources := map[string]map[string]bool{"supernode-fleet.json": sn, "relay.json": relay, "devices.json": daemon}
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(sources) {
		t.Errorf("dashboards %v, want %d (one per role); add a new one to sources", files, len(sources))
	}
	for _, f := range files {
		names, ok := sources[f]
		if !ok {
			t.Errorf("%s: no role's metrics to check it against", f)
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: uid %q title %q with %d panels", f, d.UID, d.Title, len(d.Panels))
		}
		check := func(where, expr string) {
			ms := metricNames(expr)
			if len(ms) == 0 {
				t.Errorf("%s: %s: %q names no metric", f, where, expr)
			}
			for _, m := range ms {
				if !names[m] && !names[suffix.ReplaceAllString(m, "")] {
					t.Errorf("%s: %s: %s is not a metric the code registers", f, where, m)
				}
			}
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, q := range p.Targets {
				check(fmt.Sprintf("panel %q", p.Title), q.Expr)
			}
		}
		for _, v := range d.Templating.List {
			if q, ok := v.Query.(string); ok && v.Type == "query" {
				inner := strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
				metric, _, _ := strings.Cut(inner, ",")
				check("variable "+v.Name, metric)
			}
		}
	}
}
