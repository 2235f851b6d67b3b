package main

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/metrics/metricstest"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackMetricsFlood: strangers crowd tcp-pf's --metrics port (IPv6 loopback) with 300
// connections that say nothing and 100 that send a request's first line and part of a
// header and then stall (a slow loris), each reopened as soon as tcp-pf closes it. tcp-pf
// runs with an open file limit of 256 (`ulimit -n`), which 400 connections would exhaust.
// During the flood a plain HTTP GET must get a whole scrape (which promtool accepts) within
// 2 s, 10 clients must be relayed (64 KiB each way, by SHA-256) within 2 s each, and tcp-pf
// must hold at most metrics.MaxConns+8 sockets more than before the flood. The flood is bounded at
// 4,000 connects.
func TestAttackMetricsFlood(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	metricsAt := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
	p := startPF(t, "127.0.0.1", "ulimit -n 256; exec", "-d", be.Addr(), "--metrics", metricsAt)
	metricstest.WaitFor(t, metricsAt, testkit.Timeout, "a first scrape", func(*metricstest.Scrape) bool { return true })
	fds0, socks0, rss0 := p.FDs(t), p.Sockets(t), p.RSS(t)

	silent := tunneltest.StartFlood(t, "::1", metricsAt, 300, 3000, nil)
	loris := tunneltest.StartFlood(t, "::1", metricsAt, 100, 1000, []byte("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	testkit.WaitUntil(t, testkit.Timeout, "the flood to reach tcp-pf", func() bool {
		return silent.Dials.Load() >= 300 && loris.Dials.Load() >= 100
	})
	// Let the flood take what it can: a tenth of a second more (it only adds load).
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatalf("a scrape during the flood: %v (after %v)", err, time.Since(start))
	}
	body := new(strings.Builder)
	_, err = io.Copy(body, resp.Body)
	resp.Body.Close()
	scraped := time.Since(start)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a scrape during the flood: %s, %v", resp.Status, err)
	}
	metricstest.Promtool(t, body.String())
	var slowest time.Duration
	for i := range 10 {
		start := time.Now()
		if err := testkit.EchoTrip(p.addr, uint64(i), 64<<10, 2*time.Second, false); err != nil {
			t.Fatalf("client %d during the flood: %v", i, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	fds, socks, rss := p.FDs(t), p.Sockets(t), p.RSS(t)
	silent.Stop()
	loris.Stop()
	t.Logf("flood: %d silent and %d slow connects, at most %d and %d open at once; scrape in %v; slowest of 10 clients %v; tcp-pf: %d descriptors (%d before), %d sockets (%d before), RSS %d KiB (%d before)",
		silent.Dials.Load(), loris.Dials.Load(), silent.MaxHeld.Load(), loris.MaxHeld.Load(),
		scraped.Round(time.Millisecond), slowest.Round(time.Millisecond), fds, fds0, socks, socks0, rss, rss0)
	// The metrics connections, and a relay's two.
	if limit := socks0 + metrics.MaxConns + 8; socks > limit {
		t.Errorf("tcp-pf held %d sockets during the flood of its metrics port, %d before; want at most %d", socks, socks0, limit)
	}
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
}
