package tunnel

import (
	"context"
	"fmt"
	"net"
	"time"

	"shd-tcp-tools/internal/loopdial"
)

// dialServiceFor connects to the service for a client of a TLS link, on the link's
// goroutine, as a plain link's client is connected on the loops: a service given by name
// is looked up through serviceAddrs, so that a resolver that fails or goes silent costs
// the client at most staleAfter (the last answer is used) rather than the dial timeout
// and a reset, and the addresses are connected to by loopdial (one family in turn, the
// other racing 300 ms later) on one of the relay's loops.
func (a *Agent) dialServiceFor(ctx context.Context) (*net.TCPConn, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, a.dialTimeout())
	defer cancel()
	addrs, err := a.serviceAddrs(ctx)
	if err != nil {
		return nil, err
	}
	cfg := loopdial.Config{Timeout: max(a.dialTimeout()-time.Since(start), time.Millisecond), Local: a.cfg.Local}
	c, err := loopdial.DialConn(ctx, a.loops.Least().Events(), &cfg, addrs, uint16(a.cfg.Service.Port))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", a.cfg.Service, err)
	}
	return c, nil
}
