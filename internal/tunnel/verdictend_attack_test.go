package tunnel

import (
	"net"
	"regexp"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackEndWithVerdict: a relay that ends each link right behind its verdict, in the
// same instant (a FIN, or a reset), as a listentwo that stops or crashes just then would.
// The end comes with the verdict, in the readiness the handshake's last read took, and
// no new one announces it: each plain link of a --pool 8 agent must still be seen down at
// once, never counted idle while it is gone (such a slot would never open another link).
// IPv4 and IPv6 loopback.
func TestAttackEndWithVerdict(t *testing.T) {
	const pool = 8
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, reset := range []bool{false, true} {
			name := host + "/closed"
			if reset {
				name = host + "/reset"
			}
			t.Run(name, func(t *testing.T) {
				svc := startService(t, host, echoMode)
				ln, _ := linkPort(t, host, func(c *net.TCPConn) {
					if _, err := shakeAsRelay(c, nil, time.Second); err == nil && reset {
						_ = c.SetLinger(0)
					}
				})
				tn := &tunnel{}
				startAgent(t, AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: pool,
					HandshakeTimeout: 500 * time.Millisecond, BackoffBase: 2 * time.Second}, tn)
				// Every link that came up is seen down, none counted idle: with the links
				// lost at once backed off, the slots' first links are the lot.
				ups := regexp.MustCompile(`(?m)link #\d+ up `)
				downs := regexp.MustCompile(`(?m)link #\d+ down `)
				var up, down int
				seen := func() bool {
					idle := tn.agent.IdleLinks()
					log := tn.agentLog.String() // after the idle count: every down line of a link off it
					up, down = len(ups.FindAllStringIndex(log, -1)), len(downs.FindAllStringIndex(log, -1))
					return down >= pool && up == down && idle == 0
				}
				for deadline := time.Now().Add(2 * time.Second); !seen(); {
					if time.Now().After(deadline) {
						t.Fatalf("2s on, %d links counted idle, %d up lines, %d down lines; want every link seen down:\n%s", tn.agent.IdleLinks(), up, down, testkit.Tail(tn.agentLog.String(), 12))
					}
					time.Sleep(5 * time.Millisecond) // a poll, with a deadline
				}
			})
		}
	}
}
