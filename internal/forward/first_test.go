package forward

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// A destination that speaks first reaches its client before the client has sent a byte:
// a greeting on the socket by the time tcp-pf sees the connect (the relay reads it at the
// start), and one that comes later (the relay waits for its event, reading nothing at the
// start), over IPv4 and IPv6 and in both close modes; then the connection echoes.
func TestDestinationSpeaksFirst(t *testing.T) {
	t.Parallel()
	greeting := testkit.RandomData(300)
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, later := range []time.Duration{0, 20 * time.Millisecond} {
			for _, lazy := range []bool{false, true} {
				name := fmt.Sprintf("%s/after-%v/lazy-%v", listen, later, lazy)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					be := testkit.StartBackend(t, listen, func(c *net.TCPConn) {
						// A greeting that comes later, not a synchronisation.
						time.Sleep(later)
						if _, err := c.Write(greeting); err == nil {
							testkit.Echo(c)
						}
					})
					pf := startServer(t, listen, Config{Dest: dest(t, be.Addr()), Lazy: lazy})
					for i := range 3 {
						c := testkit.Dial(t, pf.addr)
						_ = c.SetDeadline(time.Now().Add(5 * time.Second))
						got := make([]byte, len(greeting))
						if _, err := io.ReadFull(c, got); err != nil {
							t.Fatalf("connection %d: reading the greeting: %v", i, err)
						}
						if !bytes.Equal(got, greeting) {
							t.Fatalf("connection %d: the greeting differs", i)
						}
						testkit.RoundTrip(t, c, uint64(i), 64<<10)
						c.Close()
					}
					pf.log.WaitFor(t, `close #`, 3, 5*time.Second)
				})
			}
		}
	}
}
