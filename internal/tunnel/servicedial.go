package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/loopdial"
)

// minPerAddr is the least of the dial timeout each of the service's addresses gets.
const minPerAddr = 2 * time.Second

// dialServiceFor connects to the service for a client of a TLS link, on the link's
// goroutine. A service given by name is looked up through serviceAddrs, as a plain
// link's is, so that a resolver that fails or goes silent costs the client at most
// staleAfter (the last answer is used) rather than the dial timeout and a reset. The
// addresses are connected to as net.Dialer and loopdial connect: those of the first
// address's family in turn, the dial timeout spread over them (at least minPerAddr each),
// and those of the other family loopdial.DefaultFallbackDelay later (at once when the
// first family has failed), racing them; the first connection wins. A literal address is
// dialed as it is.
func (a *Agent) dialServiceFor(ctx context.Context) (*net.TCPConn, error) {
	ep := a.cfg.Service
	if _, err := netip.ParseAddr(ep.Host); err == nil {
		return a.cfg.dialService(ctx, ep)
	}
	ctx, cancel := context.WithTimeout(ctx, a.dialTimeout())
	defer cancel()
	addrs, err := a.serviceAddrs(ctx)
	if err != nil {
		return nil, err
	}
	var lanes [2][]netip.Addr
	for _, ip := range addrs {
		k := 0
		if ip.Is4() != addrs[0].Is4() {
			k = 1
		}
		lanes[k] = append(lanes[k], ip)
	}
	if len(lanes[1]) == 0 {
		return a.dialInTurn(ctx, lanes[0])
	}
	type result struct {
		c   *net.TCPConn
		err error
	}
	results := make(chan result, 2)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	start := func(addrs []netip.Addr) {
		go func() {
			c, err := a.dialInTurn(lctx, addrs)
			results <- result{c, err}
		}()
	}
	start(lanes[0])
	running, second := 1, false
	fallback := time.NewTimer(loopdial.DefaultFallbackDelay)
	defer fallback.Stop()
	var first error
	for running > 0 {
		select {
		case <-fallback.C:
		case r := <-results:
			running--
			if r.err == nil {
				if running > 0 { // the other lane's connection, if it makes one, is closed
					go func() {
						if r := <-results; r.c != nil {
							r.c.Close()
						}
					}()
				}
				return r.c, nil
			}
			if first == nil {
				first = r.err
			}
		}
		if !second {
			second = true
			running++
			start(lanes[1])
		}
	}
	return nil, first
}

// dialInTurn connects to the service at addrs one after the other until one connects,
// within ctx's deadline spread over the addresses left (at least minPerAddr each).
func (a *Agent) dialInTurn(ctx context.Context, addrs []netip.Addr) (*net.TCPConn, error) {
	deadline, _ := ctx.Deadline()
	err := fmt.Errorf("connecting to %s: %w", a.cfg.Service, context.DeadlineExceeded)
	for i, ip := range addrs {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			break
		}
		actx, cancel := context.WithTimeout(ctx, min(max(left/time.Duration(len(addrs)-i), minPerAddr), left))
		var c *net.TCPConn
		c, err = a.cfg.dialService(actx, endpoint.Endpoint{Host: ip.String(), Port: a.cfg.Service.Port})
		cancel()
		if err == nil {
			return c, nil
		}
	}
	return nil, err
}
