// Package metrics serves a tool's counts on /metrics in the Prometheus text format
// (--metrics), through the Prometheus client library. Nothing is counted here: collectors
// read the engines' own counters (internal/connstats, the balancer's entries, the tunnel's
// pool) when a scrape comes, so the data path pays nothing for a scrape and nothing more
// for being scraped.
package metrics

import (
	"context"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
)

// Path is where the metrics are served.
const Path = "/metrics"

// NewRegistry returns a registry with the standard process metrics (process_*: CPU,
// memory, open descriptors against their limit) and the Go runtime's (go_*), to which a
// tool adds its own collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
	)
	return reg
}

// inOrder is one collector made of several, collected one after the other in the order
// given, where a registry collects its collectors at once: a scrape then reads what they
// count in the order it reads them, which the writers can rely on.
type inOrder []prometheus.Collector

func (c inOrder) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c {
		x.Describe(ch)
	}
}

func (c inOrder) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c {
		x.Collect(ch)
	}
}

// Server serves one registry on Path. Create it with Listen, start it with Serve, stop it
// with Close. A nil *Server (no --metrics) does nothing.
type Server struct {
	ln   net.Listener
	http *http.Server
	done chan struct{}
}

// Listen opens the metrics listener on ep, as endpoint.Listen does (an empty Host: every
// address, or local when it is valid). The error names the address (cmd/* puts its flag
// in front). A zero ep (no --metrics) gives a nil *Server and no error.
func Listen(ctx context.Context, ep endpoint.Endpoint, local netip.Addr) (*Server, error) {
	if ep == (endpoint.Endpoint{}) {
		return nil, nil
	}
	ln, err := endpoint.Listen(ctx, ep, local)
	if err != nil {
		return nil, err
	}
	return &Server{ln: ln}, nil
}

// Addr is the listener's address; nil for a nil Server.
func (s *Server) Addr() net.Addr {
	if s == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve serves g on Path from goroutines of its own, and returns at once. Scrapes run
// beside the engine and never wait for it: the collectors read atomic counters, or take
// a lock the engine holds only briefly (the balancer's). A slow or stuck scraper holds
// only its own connection, for at most the timeouts below, and strangers hold at most
// MaxConns connections (see connCap): past it, the one that has got least far is closed.
// It logs where the metrics are to log, when log is not nil.
func (s *Server) Serve(g prometheus.Gatherer, log *connlog.Logger) {
	if s == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(g, promhttp.HandlerOpts{
		// A scrape gathers everything once; more than a few at a time is a misconfiguration
		// (or an attack) and is answered 503, not queued.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "metrics are on %s\n", Path)
	})
	cp := newConnCap(MaxConns)
	s.http = &http.Server{
		Handler:           mux,
		ConnState:         cp.connState,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		// The standard library's logger would write to stderr beside connlog, and a
		// scraper's broken connections are not the tool's events.
		ErrorLog: stdlog.New(io.Discard, "", 0),
	}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		// An error here is the listener failing for good: the tool goes on without metrics.
		_ = s.http.Serve(s.ln)
	}()
	if log != nil {
		log.Printf("metrics on http://%s%s", s.ln.Addr(), Path)
	}
}

// Close stops serving: the listener and every open scrape connection are closed. It waits
// for the serving goroutine to return.
func (s *Server) Close() {
	if s == nil {
		return
	}
	if s.http == nil {
		_ = s.ln.Close()
		return
	}
	_ = s.http.Close()
	<-s.done
}
