package metrics_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/forward"
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/metrics/metricstest"
	"shd-tcp-tools/internal/testkit"
)

// loopbacks are the two families every test runs on.
var loopbacks = []string{"127.0.0.1", "::1"}

// forwarder is a forward.Server serving on a loopback listener, with its metrics served
// on another.
type forwarder struct {
	srv     *forward.Server
	addr    string // where clients connect
	metrics string // where /metrics is
}

// startForwarder runs a forward.Server for cfg on host until the test ends, and serves its
// metrics (metrics.Forward) on host too.
func startForwarder(t *testing.T, host string, cfg forward.Config) *forwarder {
	t.Helper()
	cfg.Log = connlog.New(testkit.NewLogBuf())
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	srv, _, err := forward.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := testkit.Listen(t, net.JoinHostPort(host, "0"))
	ms, err := metrics.Listen(context.Background(), endpoint.Endpoint{Host: host}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	ms.Serve(metrics.Forward(srv), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ms.Close()
		cfg.Log.Drain()
	})
	return &forwarder{srv: srv, addr: ln.Addr().String(), metrics: ms.Addr().String()}
}

func dest(t *testing.T, addr string) endpoint.Endpoint {
	t.Helper()
	ep, err := endpoint.ParseHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestForwardCounts sends N connections and B bytes through tcp-pf's engine and checks
// that the scrape says the same: opened, closed by how, bytes each way (live, while a
// connection is still open, and in all at the end), the connect-time histogram; and that
// promtool accepts the text.
func TestForwardCounts(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			backend := testkit.StartBackend(t, net.JoinHostPort(host, "0"), testkit.Echo)
			f := startForwarder(t, host, forward.Config{Dest: dest(t, backend.Addr())})

			// Live: bytes show while the connection that moved them is still open.
			const live = 300_000
			c := testkit.Dial(t, f.addr)
			testkit.RoundTrip(t, c, 1, live)
			metricstest.WaitFor(t, f.metrics, 10*time.Second, "the live connection's bytes", func(s *metricstest.Scrape) bool {
				return s.Samples[`tcppf_relayed_bytes_total{direction="to_server"}`] == live &&
					s.Samples[`tcppf_relayed_bytes_total{direction="to_client"}`] == live
			})
			s := metricstest.Get(t, f.metrics)
			if got := s.Get(t, "tcppf_connections_open"); got != 1 {
				t.Errorf("tcppf_connections_open = %v while one connection is open, want 1", got)
			}
			if got := s.Sum("tcppf_connections_closed_total"); got != 0 {
				t.Errorf("tcppf_connections_closed_total = %v while the connection is open, want 0", got)
			}

			// N more, of different sizes, four at a time.
			const n = 24
			var wg sync.WaitGroup
			sem := make(chan struct{}, 4)
			total := int64(live)
			for i := range n {
				size := int64(1000 + i*7919)
				total += size
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					c := testkit.Dial(t, f.addr)
					testkit.RoundTrip(t, c, uint64(i), size)
					c.CloseWrite()
					if _, err := testkit.Receive(c); err != nil {
						t.Errorf("reading the end: %v", err)
					}
					c.Close()
				})
			}
			wg.Wait()
			c.CloseWrite()
			if _, err := testkit.Receive(c); err != nil {
				t.Fatal(err)
			}
			c.Close()

			s = metricstest.WaitFor(t, f.metrics, 10*time.Second, "every connection closed", func(s *metricstest.Scrape) bool {
				return s.Sum("tcppf_connections_closed_total") == n+1
			})
			for series, want := range map[string]float64{
				"tcppf_connections_accepted_total":                    n + 1,
				"tcppf_connections_opened_total":                      n + 1,
				`tcppf_connections_closed_total{end="client_closed"}`: n + 1,
				"tcppf_connections_open":                              0,
				`tcppf_relayed_bytes_total{direction="to_server"}`:    float64(total),
				`tcppf_relayed_bytes_total{direction="to_client"}`:    float64(total),
				"tcppf_connect_duration_seconds_count":                n + 1,
				`tcppf_connect_duration_seconds_bucket{le="+Inf"}`:    n + 1,
			} {
				if got := s.Get(t, series); got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
			for _, name := range []string{"tcppf_connections_refused_total", "tcppf_connections_failed_total", "tcppf_connect_failures_total"} {
				if got := s.Sum(name); got != 0 {
					t.Errorf("%s = %v in all, want 0", name, got)
				}
			}
			if sum := s.Get(t, "tcppf_connect_duration_seconds_sum"); sum <= 0 || sum > 10*(n+1) {
				t.Errorf("tcppf_connect_duration_seconds_sum = %v, want a positive time under the timeouts", sum)
			}
			if s.Get(t, "process_open_fds") <= 0 || s.Get(t, "go_goroutines") <= 0 {
				t.Errorf("the standard process and Go metrics are missing or zero")
			}
			metricstest.Promtool(t, s.Text)
		})
	}
}

// TestForwardRefusedAndFailed checks the counts of clients turned away by the allow list
// and of clients whose destination refused.
func TestForwardRefusedAndFailed(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			// No one but 192.0.2.1 is allowed: every loopback client is refused.
			only, err := allow.Parse(context.Background(), nil, []string{"192.0.2.1"})
			if err != nil {
				t.Fatal(err)
			}
			backend := testkit.StartBackend(t, net.JoinHostPort(host, "0"), testkit.Echo)
			refusing := startForwarder(t, host, forward.Config{Dest: dest(t, backend.Addr()), Allow: only})
			// A destination port that refuses: nothing listens on it.
			closed := net.JoinHostPort(host, fmt.Sprint(testkit.FreePort(t, host)))
			failing := startForwarder(t, host, forward.Config{Dest: dest(t, closed)})

			const n = 5
			for _, addr := range []string{refusing.addr, failing.addr} {
				for range n {
					// The client is reset, at times before the dial returns.
					if c, err := net.Dial("tcp", addr); err == nil {
						_, _ = testkit.Receive(c)
						c.Close()
					}
				}
			}
			s := metricstest.WaitFor(t, refusing.metrics, 10*time.Second, "the refusals", func(s *metricstest.Scrape) bool {
				return s.Samples[`tcppf_connections_refused_total{reason="allow_list"}`] == n
			})
			if got := s.Get(t, "tcppf_connections_accepted_total"); got != n {
				t.Errorf("accepted = %v, want %v", got, n)
			}
			if got := s.Get(t, "tcppf_connections_opened_total"); got != 0 || backend.Accepts.Load() != 0 {
				t.Errorf("opened = %v, backend accepts %d; want 0 for refused clients", got, backend.Accepts.Load())
			}
			s = metricstest.WaitFor(t, failing.metrics, 10*time.Second, "the failures", func(s *metricstest.Scrape) bool {
				return s.Samples[`tcppf_connections_failed_total{reason="refused"}`] == n
			})
			for series, want := range map[string]float64{
				`tcppf_connect_failures_total{reason="refused"}`: n,
				"tcppf_connections_opened_total":                 0,
				"tcppf_connections_accepted_total":               n,
				"tcppf_connections_open":                         0,
			} {
				if got := s.Get(t, series); got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
			metricstest.Promtool(t, s.Text)
		})
	}
}

// TestForwardHosts checks the per-entry series of a host file: a host that refuses is set
// aside (healthy 0) and the one that serves has the bytes, in its count and in what this
// process relayed, and its open connection while it is open.
func TestForwardHosts(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			backend := testkit.StartBackend(t, net.JoinHostPort(host, "0"), testkit.Echo)
			dead := net.JoinHostPort(host, fmt.Sprint(testkit.FreePort(t, host)))
			file := filepath.Join(t.TempDir(), "hosts")
			// The dead host first: the first client tries it, then the live one.
			if err := os.WriteFile(file, []byte(dead+" 0\n"+backend.Addr()+" 1000\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			f := startForwarder(t, host, forward.Config{HostFile: file})
			series := func(name, entry string) string { return fmt.Sprintf("%s{host=%q}", name, entry) }

			const size = 50_000
			c := testkit.Dial(t, f.addr)
			testkit.RoundTrip(t, c, 7, size)
			s := metricstest.WaitFor(t, f.metrics, 10*time.Second, "the live host's bytes", func(s *metricstest.Scrape) bool {
				return s.Samples[series("tcppf_host_relayed_bytes_total", backend.Addr())] == 2*size
			})
			for k, want := range map[string]float64{
				series("tcppf_host_bytes", backend.Addr()):               1000 + 2*size,
				series("tcppf_host_connections_open", backend.Addr()):    1,
				series("tcppf_host_healthy", backend.Addr()):             1,
				series("tcppf_host_healthy", dead):                       0,
				series("tcppf_host_connections_open", dead):              0,
				series("tcppf_host_relayed_bytes_total", dead):           0,
				series("tcppf_host_bytes", dead):                         0,
				`tcppf_connect_failures_total{reason="refused"}`:         1,
				`tcppf_connections_failed_total{reason="refused"}`:       0,
				"tcppf_connections_opened_total":                         1,
				`tcppf_relayed_bytes_total{direction="to_server"}`:       size,
				`tcppf_connections_refused_total{reason="proxy_header"}`: 0,
			} {
				if got := s.Get(t, k); got != want {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
			c.Close()
			s = metricstest.WaitFor(t, f.metrics, 10*time.Second, "the close", func(s *metricstest.Scrape) bool {
				return s.Sum("tcppf_connections_closed_total") == 1
			})
			if got := s.Get(t, series("tcppf_host_connections_open", backend.Addr())); got != 0 {
				t.Errorf("open connections of the host after the close = %v, want 0", got)
			}
			metricstest.Promtool(t, s.Text)
		})
	}
}
