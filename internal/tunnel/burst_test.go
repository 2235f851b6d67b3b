package tunnel

import (
	"crypto/rand"
	"io"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startHeldService is an echo service that holds every connection until n have come: a
// burst of n clients through the tunnel then holds n links at once, and clients beyond the
// links idle wait on the relay for new ones.
func startHeldService(t *testing.T, host string, n int) *service {
	t.Helper()
	s := &service{ln: listen(t, host)}
	var arrived atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	serveEach(t, s.ln, func(c *net.TCPConn) {
		if arrived.Add(1) == int64(n) {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(testTimeout):
			return
		}
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
	return s
}

// TestPlainBurstGrowsPool sends a burst of 16 clients at once, each with its own random
// payload checked by SHA-256, through plain links with --pool 1, on both loopbacks. The
// links opened for the waiting clients are taken as soon as they join the relay's pool, so
// connecttwo opens links beyond --pool (more links up than clients and pool); once the
// burst is over, the links beyond --pool are closed as not needed within idleTrim (the
// seam: 300 ms) and the pool is back at one idle link on both sides.
func TestPlainBurstGrowsPool(t *testing.T) {
	const clients = 16
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startHeldService(t, host, clients)
			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			errs := make(chan error, clients)
			for i := range clients {
				go func() {
					c, err := net.DialTimeout("tcp", tn.clients.Addr().String(), testTimeout)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					_, err = roundTrip(c.(*net.TCPConn), 1+i*7919%(64<<10), 0)
					errs <- err
				}()
			}
			for i := range clients {
				if err := <-errs; err != nil {
					t.Fatalf("client %d of the burst: %v", i+1, err)
				}
			}
			// Settled: one slot, its link idle, none being opened, every link's line written.
			var up, trimmed int
			settled := func() bool {
				up = tn.agentLog.count(`link #\d+ up`)
				trimmed = tn.agentLog.count(`link #\d+ down .*: not needed: more idle links than the pool size`)
				return tn.agent.plainSlots.Load() == 1 && tn.agent.Stats().Connecting == 0 && tn.agent.IdleLinks() == 1 && up-trimmed == 1+clients
			}
			for deadline := time.Now().Add(testTimeout); !settled(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("not back at --pool 1 within %v: %d slots, %d idle, %d links up, %d closed as not needed\nagent:\n%s",
						testTimeout, tn.agent.plainSlots.Load(), tn.agent.IdleLinks(), up, trimmed, tn.agentLog)
				}
			}
			tn.waitPools(t, 1, 1)
			if up <= clients+1 {
				t.Errorf("%d links up for %d clients and --pool 1: the pool did not grow", up, clients)
			}
			if n := tn.agentLog.count(`failed|retry`); n != 0 {
				t.Errorf("%d links failed or retried, want none\nagent:\n%s", n, tn.agentLog)
			}
		})
	}
}

// TestPlainBurstRefusedNotRetried: a relay that takes its first link at once (a client
// waited: the pool grows by a link beyond --pool 1) and then refuses every link with
// "idle link pool is full". The link beyond --pool is tried once and not again; only the
// --pool link retries, with its backoff, so the relay gets one attempt more than before
// and no second retrier. IPv4 and IPv6 loopback.
func TestPlainBurstRefusedNotRetried(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			var n atomic.Int64
			ln, _ := linkPort(t, host, func(c *net.TCPConn) {
				first := n.Add(1) == 1
				if !readOpening(c) {
					return
				}
				var g offer
				_, _ = rand.Read(g.nonce[:])
				if _, err := io.WriteString(c, g.text()+"\n"); err != nil {
					return
				}
				if _, err := readLineConn(c); err != nil {
					return
				}
				if !first {
					_, _ = io.WriteString(c, "ERR idle link pool is full\n")
					return
				}
				if _, err := io.WriteString(c, "OK mac=-\nping\n"); err != nil { // taken at once
					return
				}
				_ = c.CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			})
			var tn tunnel
			startAgent(t, AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 1,
				BackoffBase: 20 * time.Millisecond, BackoffMax: 5 * time.Second}, &tn)
			relay := regexpQuote(epOf(t, ln.Addr()).String())
			tn.agentLog.wait(`link #\d+ to ` + relay + ` failed: .*idle link pool is full; retry 3 in`)
			if got := tn.agentLog.count(`link #\d+ to .* failed: .*; not retried: more links than the pool size`); got != 1 {
				t.Errorf("%d links beyond --pool failed and were dropped, want 1 (the burst's one)\n%s", got, tn.agentLog)
			}
			retrying := map[string]bool{}
			for _, m := range regexp.MustCompile(`link #(\d+) to \S+ failed: .*; retry (\d+) in`).FindAllStringSubmatch(tn.agentLog.String(), -1) {
				retrying[m[1]] = true
			}
			if len(retrying) != 1 {
				t.Errorf("links %v retried, want one (the --pool link's slot alone)\n%s", retrying, tn.agentLog)
			}
			if got := tn.agentLog.count(`link #[4-9]\d* `); got != 0 {
				t.Errorf("links beyond #3 (the taken one, its replacement, one beyond --pool): %d lines\n%s", got, tn.agentLog)
			}
		})
	}
}
