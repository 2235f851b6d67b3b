package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// metric reads one sample (name with its labels, as the exposition writes it) from the
// Prometheus endpoint at addr; -1 when it is not there (or not yet served).
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", sample, v)
			}
			return f
		}
	}
	return -1
}

// TestAttackSIGSTOPRelayMidBurst: listentwo (--max-links 6, TLS) stopped with SIGSTOP for
// 500 ms in the middle of a burst of 12 clients through connecttwo's --pool 4, and let go
// on with SIGCONT. The clients that waited on the stopped relay, and the sessions it froze,
// go on: every client gets its 256 KiB back intact (SHA-256) on its first try, and none
// fails at connecttwo; within 2 s of the burst's end connecttwo has no link being opened,
// and both ends count the same idle links, at least --pool 4 (the links beyond it are
// trimmed once idle 5 s, which the in-process tests check).
func TestAttackSIGSTOPRelayMidBurst(t *testing.T) {
	bins := tunneltest.Build(t)
	const pool, clients, size = 4, 12, 256 << 10
	host := "127.0.0.1"
	svc := testkit.StartBackend(t, host+":0", func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
	port := func() string { return host + ":" + strconv.Itoa(testkit.FreePort(t, host)) }
	key := filepath.Join(t.TempDir(), "relay.key")
	clientsAt, links, relayMetrics, agentMetrics := port(), port(), port(), port()
	relay := testkit.Start(t, bins["listentwo"], "-s", clientsAt, "-d", links, "--hello-dst", "--tls-key", key,
		"--max-links", strconv.Itoa(pool+2), "--metrics", relayMetrics)
	relay.Log.WaitFor(t, `tls pin sha256/\S+$`, 1, testkit.Timeout)
	pin := regexp.MustCompile(`(?m)tls pin (sha256/\S+)$`).FindStringSubmatch(relay.Log.String())[1]
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src",
		"--pool", strconv.Itoa(pool), "--tls-pin", pin, "--metrics", agentMetrics)
	idle := func() (agentIdle, relayIdle, connecting float64) {
		return metric(t, agentMetrics, `connecttwo_links{state="idle"}`), metric(t, relayMetrics, "listentwo_links_idle"),
			metric(t, agentMetrics, `connecttwo_links{state="connecting"}`)
	}
	testkit.WaitUntil(t, testkit.Timeout, "--pool links idle on both ends", func() bool {
		a, r, _ := idle()
		return a == pool && r == pool
	})

	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			c, err := net.DialTimeout("tcp", clientsAt, testkit.Timeout)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testkit.Timeout))
			sent := make(chan error, 1)
			go func() {
				_, err := testkit.Send(c, uint64(i+1), size)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				sent <- err
			}()
			d := testkit.NewDigester()
			_, rerr := io.Copy(d, c)
			if werr := <-sent; werr != nil {
				errs <- fmt.Errorf("client %d sending: %w", i+1, werr)
				return
			}
			if got, want := d.Digest(), testkit.Expected(uint64(i+1), size); rerr != nil || got != want {
				errs <- fmt.Errorf("client %d: got %v back (%v), want %v", i+1, got, rerr, want)
				return
			}
			errs <- nil
		}()
	}
	agent.Log.WaitFor(t, `open #\d+ `, 2, testkit.Timeout) // the burst under way
	relay.Signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	time.Sleep(500 * time.Millisecond) // how long listentwo stays stopped (the scenario, not a wait)
	relay.Signal(t, syscall.SIGCONT)
	t.Logf("listentwo stopped for %v with %d sessions opened", time.Since(stopped).Round(time.Millisecond), agent.Log.Count(`open #\d+ `))
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	end := time.Now()
	testkit.WaitUntil(t, 2*time.Second, "connecttwo opening no link, both ends with the same idle links", func() bool {
		a, r, c := idle()
		return c == 0 && a == r && a >= pool
	})
	a, r, _ := idle()
	t.Logf("%v after the burst: %v idle on connecttwo, %v on listentwo (--pool %d; those beyond it are trimmed idle 5 s, as TestTLSBurstSettles checks); connecttwo: %d links up, %d down, %d failed; listentwo refused %v as its pool was full",
		time.Since(end).Round(time.Millisecond), a, r, pool, agent.Log.Count(`link #\d+ up`), agent.Log.Count(`link #\d+ down`),
		agent.Log.Count(`link #\d+ .*failed`), metric(t, relayMetrics, `listentwo_handshakes_refused_total{reason="pool_full"}`))
	if n := agent.Log.Count(`failed -> `); n != 0 {
		t.Errorf("connecttwo failed %d clients\n%s", n, testkit.Tail(agent.Log.String(), 30))
	}
}
