// Package metrics is what every parley role (node, supernode, cloud relay)
// does the same way with Prometheus: pick the registry its configuration
// asks for, serve it on http://ADDR/metrics, and register a group of
// collectors all or none. It never serves anything but /metrics.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrNotGatherer is Registry's error for a Registerer that cannot also be
// served.
var ErrNotGatherer = errors.New("MetricsAddr needs a Registerer that is also a prometheus.Gatherer (a *prometheus.Registry), or none")

// Registry is the registerer of a role's metrics and what serves them,
// from its configuration: reg as given (nil: no metrics) when addr is "";
// a new registry with the Go and process collectors when only addr is set;
// reg, which must then also be a prometheus.Gatherer, when both are.
func Registry(reg prometheus.Registerer, addr string) (prometheus.Registerer, prometheus.Gatherer, error) {
	switch {
	case reg == nil && addr == "":
		return nil, nil, nil
	case reg == nil:
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		return r, r, nil
	case addr == "":
		return reg, nil, nil
	}
	g, ok := reg.(prometheus.Gatherer)
	if !ok {
		return nil, nil, ErrNotGatherer
	}
	return reg, g, nil
}

// Server serves metrics over HTTP. A nil *Server is a server that is off.
type Server struct {
	srv  *http.Server
	addr net.Addr
}

// Serve listens on addr (host:port) and serves g on /metrics.
func Serve(addr string, g prometheus.Gatherer) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, addr: l.Addr()}
	go s.srv.Serve(l) // returns http.ErrServerClosed at Close
	return s, nil
}

// Addr is where the server listens; nil for a nil server.
func (s *Server) Addr() net.Addr {
	if s == nil {
		return nil
	}
	return s.addr
}

// Close stops the server; a nil server is already stopped.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	return s.srv.Close()
}

// RegisterAll registers every collector of cs with reg, or none of them:
// when one fails, those already registered are unregistered again. The
// function returned unregisters them all.
func RegisterAll(reg prometheus.Registerer, cs []prometheus.Collector) (unregister func(), err error) {
	undo := func(done []prometheus.Collector) {
		for _, c := range done {
			reg.Unregister(c)
		}
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			undo(cs[:i])
			return nil, err
		}
	}
	return func() { undo(cs) }, nil
}
