package forward

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"shd-tcp-tools/internal/dnscache"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/health"
)

// The destinations' names and health: names are looked up only when a connection tries
// their host, through a cache shared by every connection (dnscache); with a host file, a
// host that fails is set aside until a background connect check succeeds (health).

// newHosts sets up the name cache and, for a host file, the health tracker.
func (s *Server) newHosts() {
	s.names = &dnscache.Cache{Timeout: orDefault(s.cfg.ConnectTimeout, DefaultConnectTimeout)}
	s.source = endpoint.List[*hostEntry]{{ep: s.cfg.Dest, idx: -1}}
	if s.bal != nil {
		s.source = s.bal
		s.health = health.New(s.checkHost, s.log.Warnf)
		s.bal.health = s.health
	}
}

// network is what names resolve to: both families, or the family of the local address.
func (s *Server) network() string {
	switch l := s.cfg.Local; {
	case !l.IsValid():
		return "ip"
	case l.Is4():
		return "ip4"
	default:
		return "ip6"
	}
}

// addrsOf returns the addresses of ep's host: an IP literal as it is, a name's from the
// cache or a lookup.
func (s *Server) addrsOf(ctx context.Context, ep endpoint.Endpoint) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(ep.Host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ans := s.names.Resolve(ctx, s.network(), ep.Host)
	return ans.Addrs, ans.Err
}

// checkHost is the health check of a host set aside: a TCP connect to one of its
// addresses, within the connect timeout, closed at once.
func (s *Server) checkHost(ctx context.Context, ep endpoint.Endpoint) error {
	ctx, cancel := context.WithTimeout(ctx, orDefault(s.cfg.ConnectTimeout, DefaultConnectTimeout))
	defer cancel()
	addrs, err := s.addrsOf(ctx, ep)
	if err != nil {
		return err
	}
	var d net.Dialer
	if l := s.cfg.Local; l.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: l.AsSlice(), Zone: l.Zone()}
	}
	for _, a := range addrs {
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(ep.Port)).String()); err == nil {
			return c.Close()
		}
	}
	return err
}

// warnUnresolved logs one warning when the single destination is a name that does not
// resolve at start (it primes the cache for the first client otherwise). It does not hold
// up serving; the returned function waits for it, or for ctx.
func (s *Server) warnUnresolved(ctx context.Context) (wait func()) {
	ep := s.cfg.Dest
	if _, err := netip.ParseAddr(ep.Host); s.bal != nil || err == nil {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := s.addrsOf(ctx, ep); err != nil && ctx.Err() == nil {
			s.log.Warnf("warning: destination %s does not resolve (%v): each client is reset until it does", ep, err)
		}
	})
	return wg.Wait
}
