package tunnel

import (
	"io"
	"runtime"
	"testing"
	"time"
)

// A relayed pair of plain links and clients runs on the event loops: an open relay holds
// no goroutine on either side, where the goroutine engine held two on each.
func TestOpenRelayHoldsNoGoroutine(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			const clients, pool = 16, 4
			svc := startService(t, host, echoMode) // one goroutine per connection, its own
			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: pool}, &tn)
			tn.waitPools(t, pool, pool)
			base := runtime.NumGoroutine()
			for i := range clients {
				c := dial(t, tn.clients)
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
					t.Fatalf("client %d: echo %q, %v", i, buf, err)
				}
			}
			tn.waitPools(t, pool, pool)
			// The service's goroutines and a few passing ones (log writers, dials) are
			// allowed; the relays' own would be 4 per client.
			limit := base + clients + 8
			deadline := time.Now().Add(5 * time.Second)
			n := runtime.NumGoroutine()
			for n > limit && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // polling for passing goroutines to end
				n = runtime.NumGoroutine()
			}
			if n > limit {
				t.Fatalf("%d goroutines with %d open relays, from %d before: more than %d", n, clients, base, limit)
			}
		})
	}
}
