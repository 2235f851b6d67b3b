package tunnel

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestStopWhileAcceptingOnLoops: a plain relay stopped while its event loops accept a
// stream of connections on both ports (clients that send a byte, links that send the
// opening, and clients paired with the agent's links) returns nil within 2 s, and its
// listening sockets are closed then (the loops' duplicates too): a connect is refused. Over
// IPv4 and IPv6.
func TestStopWhileAcceptingOnLoops(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 2}, &tn)
			tn.waitPools(t, 2, 2)
			if _, err := roundTrip(dial(t, tn.clients), 64<<10, 0); err != nil {
				t.Fatalf("client before the stop: %v", err)
			}
			clients, links := tn.clients.Addr().String(), tn.links.Addr().String()

			var stop atomic.Bool
			var connects atomic.Int64
			var flood sync.WaitGroup
			for i := range 4 {
				addr, first := clients, []byte("x")
				if i%2 == 1 {
					addr, first = links, []byte(opening)
				}
				flood.Go(func() {
					for n := 0; n < 2000 && !stop.Load(); n++ {
						c, err := net.DialTimeout("tcp", addr, time.Second)
						if err != nil {
							continue // refused once the relay has stopped
						}
						connects.Add(1)
						_, _ = c.Write(first)
						c.Close()
					}
				})
			}
			defer func() {
				stop.Store(true)
				flood.Wait()
			}()
			deadline := time.Now().Add(testTimeout)
			for connects.Load() < 100 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond) // a poll's tick
			}
			start := time.Now()
			tn.stopRelay()
			waitDone(t, "Relay.Serve", tn.relayDone)
			took := time.Since(start)
			t.Logf("stopped after %d connects, in %v", connects.Load(), took.Round(time.Millisecond))
			if tn.relayErr != nil {
				t.Fatalf("Serve: %v", tn.relayErr)
			}
			if took > 2*time.Second {
				t.Errorf("the relay took %v to stop while accepting, want at most 2s", took)
			}
			for _, addr := range []string{clients, links} {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
					t.Errorf("%s still accepts connections after Serve returned", addr)
				} else if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("connecting to %s after the stop: %v, want connection refused", addr, err)
				}
			}
		})
	}
}
