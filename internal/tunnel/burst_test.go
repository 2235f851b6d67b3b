package tunnel

import (
	"io"
	"net"
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
				trimmed = tn.agentLog.count(`link #\d+ down .*: not needed: more idle links than --pool`)
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
