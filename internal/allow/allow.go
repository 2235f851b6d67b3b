// Package allow decides which clients a listener serves: an allow list of addresses and
// CIDR blocks, IPv4 and IPv6, built from -a options (host names resolved once, at start).
package allow

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// List is a set of address prefixes. The zero value (or nil) allows every client.
// A List is read-only once built, so it is safe for simultaneous use.
type List struct {
	prefixes []netip.Prefix
}

// Resolver looks host names up; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Parse builds a List from -a values: IP literals, ADDR/PREFIX CIDR blocks, and host names
// (every address a name resolves to is allowed). A malformed block or a name that does not
// resolve is an error naming the value.
func Parse(ctx context.Context, r Resolver, values []string) (*List, error) {
	l := &List{}
	for _, v := range values {
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("allow %q: not a valid ADDR/PREFIX block", v)
			}
			if m := p.Masked(); m != p {
				return nil, fmt.Errorf("allow %q: host bits set; did you mean %s?", v, m)
			}
			l.prefixes = append(l.prefixes, unmapPrefix(p))
			continue
		}
		if a, err := netip.ParseAddr(strings.Trim(v, "[]")); err == nil {
			l.prefixes = append(l.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		if r == nil {
			r = net.DefaultResolver
		}
		addrs, err := r.LookupNetIP(ctx, "ip", v)
		if ctx.Err() != nil {
			// A stop (a signal) during the lookup: not a name that does not resolve.
			return nil, &StoppedError{Name: v, Err: context.Cause(ctx)}
		}
		if err != nil || len(addrs) == 0 {
			return nil, fmt.Errorf("allow %q: host not found", v)
		}
		for _, a := range addrs {
			a = a.Unmap()
			l.prefixes = append(l.prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return l, nil
}

// StoppedError is Parse's error when its context ended while a name was looked up: the
// tool is being stopped, and the name may well resolve.
type StoppedError struct {
	Name string // the name being looked up
	Err  error  // the context's cause
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("stopped while looking up %q: %v", e.Name, e.Err)
}

func (e *StoppedError) Unwrap() error { return e.Err }

// unmapPrefix turns a block of IPv4-mapped IPv6 addresses (::ffff:10.0.0.0/104) into its
// IPv4 form (10.0.0.0/8), since Allows compares clients in their IPv4 form.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// Empty reports whether the list has no entry, that is, allows every client.
func (l *List) Empty() bool { return l == nil || len(l.prefixes) == 0 }

// Allows reports whether a client at addr may be served. An IPv4-mapped IPv6 address
// (::ffff:192.0.2.1) matches its IPv4 form.
func (l *List) Allows(addr netip.Addr) bool {
	if l.Empty() {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range l.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// AllowsConn reports whether the remote end of c may be served.
func (l *List) AllowsConn(c net.Conn) bool {
	if l.Empty() {
		return true
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return false
	}
	return l.Allows(ap.Addr())
}
