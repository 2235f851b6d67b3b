package metrics_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/metrics/metricstest"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel"
)

// serveMetrics serves g on host until the test ends and returns where.
func serveMetrics(t *testing.T, host string, g prometheus.Gatherer) string {
	t.Helper()
	ms, err := metrics.Listen(context.Background(), endpoint.Endpoint{Host: host}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	ms.Serve(g, nil)
	t.Cleanup(ms.Close)
	return ms.Addr().String()
}

// tunnelPair is a listentwo and a connecttwo engine on loopback, each with its metrics.
type tunnelPair struct {
	clients              string // where clients connect
	links                string // where links connect
	relayMetrics, agentM string
}

// startTunnel runs a Relay on host (its metrics too) and, when agent is not nil, an Agent
// towards it with agent's settings, until the test ends.
func startTunnel(t *testing.T, host string, rc tunnel.RelayConfig, agent *tunnel.AgentConfig) *tunnelPair {
	t.Helper()
	clients := testkit.Listen(t, net.JoinHostPort(host, "0"))
	links := testkit.Listen(t, net.JoinHostPort(host, "0"))
	rc.Clients, rc.Links = dest(t, clients.Addr().String()), dest(t, links.Addr().String())
	rc.Log = connlog.New(testkit.NewLogBuf())
	r, err := tunnel.NewRelay(rc)
	if err != nil {
		t.Fatal(err)
	}
	tp := &tunnelPair{clients: clients.Addr().String(), links: links.Addr().String()}
	tp.relayMetrics = serveMetrics(t, host, metrics.Relay(r))
	run(t, "Relay.Serve", func(ctx context.Context) error { return r.Serve(ctx, clients, links) })
	if agent != nil {
		ac := *agent
		ac.Relay = rc.Links
		ac.Log = connlog.New(testkit.NewLogBuf())
		a, err := tunnel.NewAgent(ac)
		if err != nil {
			t.Fatal(err)
		}
		tp.agentM = serveMetrics(t, host, metrics.Agent(a))
		run(t, "Agent.Run", a.Run)
	}
	return tp
}

// run runs f until the test ends, then cancels it and checks its error.
func run(t *testing.T, what string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not return within 30 s of the stop", what)
		}
	})
}

func wantSamples(t *testing.T, s *metricstest.Scrape, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		if got := s.Get(t, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
}

// TestTunnelCounts relays N clients and B bytes through listentwo's and connecttwo's
// engines and checks both sides' scrapes: links by state, pairings, connections opened and
// closed, bytes each way (live, while a client is still connected, and in all), and that
// promtool accepts the text.
func TestTunnelCounts(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			service := testkit.StartBackend(t, net.JoinHostPort(host, "0"), testkit.Echo)
			tp := startTunnel(t, host, tunnel.RelayConfig{Hello: true},
				&tunnel.AgentConfig{Service: dest(t, service.Addr()), Hello: true, Pool: 2})
			metricstest.WaitFor(t, tp.relayMetrics, 10*time.Second, "two idle links on listentwo", func(s *metricstest.Scrape) bool {
				return s.Samples["listentwo_links_idle"] == 2
			})
			metricstest.WaitFor(t, tp.agentM, 10*time.Second, "two idle links on connecttwo", func(s *metricstest.Scrape) bool {
				return s.Samples[`connecttwo_links{state="idle"}`] == 2
			})

			// Live: the bytes of a client still connected.
			const live = 200_000
			c := testkit.Dial(t, tp.clients)
			testkit.RoundTrip(t, c, 1, live)
			for _, side := range []struct{ addr, ns string }{{tp.relayMetrics, "listentwo"}, {tp.agentM, "connecttwo"}} {
				s := metricstest.WaitFor(t, side.addr, 10*time.Second, side.ns+" counting the live bytes", func(s *metricstest.Scrape) bool {
					return s.Samples[side.ns+`_relayed_bytes_total{direction="to_server"}`] == live &&
						s.Samples[side.ns+`_relayed_bytes_total{direction="to_client"}`] == live
				})
				wantSamples(t, s, map[string]float64{side.ns + "_connections_open": 1})
			}
			wantSamples(t, metricstest.Get(t, tp.agentM), map[string]float64{`connecttwo_links{state="busy"}`: 1})

			const n = 6
			total := float64(live)
			for i := range n {
				size := int64(1000 + i*33333)
				total += float64(size)
				c := testkit.Dial(t, tp.clients)
				testkit.RoundTrip(t, c, uint64(i), size)
				c.CloseWrite()
				if _, err := testkit.Receive(c); err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			c.CloseWrite()
			if _, err := testkit.Receive(c); err != nil {
				t.Fatal(err)
			}
			c.Close()

			for _, side := range []struct{ addr, ns string }{{tp.relayMetrics, "listentwo"}, {tp.agentM, "connecttwo"}} {
				s := metricstest.WaitFor(t, side.addr, 10*time.Second, side.ns+" closing every connection", func(s *metricstest.Scrape) bool {
					return s.Sum(side.ns+"_connections_closed_total") == n+1
				})
				ns := side.ns
				wantSamples(t, s, map[string]float64{
					ns + "_connections_accepted_total":                    n + 1,
					ns + "_connections_opened_total":                      n + 1,
					ns + `_connections_closed_total{end="client_closed"}`: n + 1,
					ns + "_connections_open":                              0,
					ns + `_relayed_bytes_total{direction="to_server"}`:    total,
					ns + `_relayed_bytes_total{direction="to_client"}`:    total,
					ns + "_connect_duration_seconds_count":                n + 1,
				})
				if got := s.Sum(ns + "_connections_failed_total"); got != 0 {
					t.Errorf("%s_connections_failed_total = %v in all, want 0", ns, got)
				}
				metricstest.Promtool(t, s.Text)
			}
			s := metricstest.WaitFor(t, tp.relayMetrics, 10*time.Second, "the pool full again", func(s *metricstest.Scrape) bool {
				return s.Samples["listentwo_links_idle"] == 2
			})
			wantSamples(t, s, map[string]float64{
				"listentwo_pairings_total":  n + 1,
				"listentwo_links_up_total":  n + 1 + 2,
				"listentwo_clients_waiting": 0,
			})
			if got := s.Sum("listentwo_handshakes_refused_total"); got != 0 {
				t.Errorf("listentwo_handshakes_refused_total = %v in all, want 0", got)
			}
			s = metricstest.WaitFor(t, tp.agentM, 10*time.Second, "connecttwo's pool full again", func(s *metricstest.Scrape) bool {
				return s.Samples[`connecttwo_links{state="idle"}`] == 2 && s.Samples[`connecttwo_links{state="busy"}`] == 0
			})
			wantSamples(t, s, map[string]float64{
				"connecttwo_links_up_total":            n + 1 + 2,
				"connecttwo_reconnects_total":          0,
				`connecttwo_links{state="connecting"}`: 0,
			})
		})
	}
}

// TestTunnelRefusals checks the counts of what goes wrong: a link with the wrong secret
// is refused (listentwo: auth; connecttwo: a link failure and reconnects), a stranger that
// is not a link, and a client that finds no link within --wait.
func TestTunnelRefusals(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			service := testkit.StartBackend(t, net.JoinHostPort(host, "0"), testkit.Echo)
			tp := startTunnel(t, host, tunnel.RelayConfig{Hello: true, Secret: []byte("one"), Wait: 50 * time.Millisecond},
				&tunnel.AgentConfig{Service: dest(t, service.Addr()), Hello: true, Pool: 1, Secret: []byte("another"),
					BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, RefusedMax: 20 * time.Millisecond})

			stranger := testkit.Dial(t, tp.links)
			if _, err := stranger.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			_, _ = testkit.Receive(stranger) // closed or reset by listentwo
			client := testkit.Dial(t, tp.clients)
			_, _ = testkit.Receive(client) // closed after --wait

			s := metricstest.WaitFor(t, tp.relayMetrics, 10*time.Second, "the refusals on listentwo", func(s *metricstest.Scrape) bool {
				return s.Samples[`listentwo_handshakes_refused_total{reason="auth"}`] >= 2 &&
					s.Samples[`listentwo_handshakes_refused_total{reason="not_a_link"}`] == 1 &&
					s.Samples[`listentwo_connections_failed_total{reason="no_link"}`] == 1
			})
			wantSamples(t, s, map[string]float64{
				"listentwo_links_up_total":             0,
				"listentwo_links_idle":                 0,
				"listentwo_pairings_total":             0,
				"listentwo_connections_opened_total":   0,
				"listentwo_connections_accepted_total": 1,
			})
			metricstest.Promtool(t, s.Text)
			s = metricstest.WaitFor(t, tp.agentM, 10*time.Second, "connecttwo's failed links and reconnects", func(s *metricstest.Scrape) bool {
				return s.Sum("connecttwo_link_failures_total") >= 2 && s.Samples["connecttwo_reconnects_total"] >= 1
			})
			wantSamples(t, s, map[string]float64{"connecttwo_links_up_total": 0, `connecttwo_links{state="idle"}`: 0})
			metricstest.Promtool(t, s.Text)
		})
	}
}
