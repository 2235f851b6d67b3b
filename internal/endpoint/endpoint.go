// Package endpoint parses the addresses the tools are given (ports, HOST:PORT words,
// [ADDR:]PORT listen specs, the INADDR_DEFAULT local address) and opens TCP sockets on them:
// listeners and outgoing connections bound to a chosen local address, with failover across
// an ordered list of candidate hosts.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Endpoint is a host (name or IP literal, no brackets) and a TCP port.
type Endpoint struct {
	Host string
	Port int
}

// String returns the endpoint as HOST:PORT, with IPv6 literals in brackets.
func (e Endpoint) String() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// ParsePort reads a TCP port: a decimal number from 1 to 65535 or a service name such as
// "ssh". Zero, out-of-range numbers and unknown names are errors; numbers are never wrapped
// modulo 65536.
func ParsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	if isDigits(s) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return 0, fmt.Errorf("port %q out of range 1-65535", s)
		}
		return n, nil
	}
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("port %q out of range 1-65535", s)
	}
	n, err := net.LookupPort("tcp", s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("port %q: not a number from 1 to 65535 nor a known service name", s)
	}
	return n, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// ParseHostPort reads a HOST:PORT word; an IPv6 literal must be in brackets ([::1]:22).
func ParseHostPort(s string) (Endpoint, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("address %q: want HOST:PORT, with IPv6 in brackets as [::1]:22", s)
	}
	if host == "" {
		return Endpoint{}, fmt.Errorf("address %q: missing host", s)
	}
	p, err := ParsePort(port)
	if err != nil {
		return Endpoint{}, fmt.Errorf("address %q: %w", s, err)
	}
	return Endpoint{Host: host, Port: p}, nil
}

// ParseListen reads a listen spec [ADDR:]PORT ("8080", ":8080", "127.0.0.1:8080",
// "[::1]:8080"). A missing ADDR gives an empty Host: every address, or INADDR_DEFAULT.
func ParseListen(s string) (Endpoint, error) {
	if !strings.Contains(s, ":") {
		p, err := ParsePort(s)
		if err != nil {
			return Endpoint{}, err
		}
		return Endpoint{Port: p}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("listen address %q: want [ADDR:]PORT, with IPv6 in brackets as [::1]:8080", s)
	}
	p, err := ParsePort(port)
	if err != nil {
		return Endpoint{}, fmt.Errorf("listen address %q: %w", s, err)
	}
	return Endpoint{Host: host, Port: p}, nil
}

// EnvLocal is the environment variable that names the local address for every socket.
const EnvLocal = "INADDR_DEFAULT"

// ResolveLocal turns the value of INADDR_DEFAULT (an IP literal, with its zone for a
// link-local IPv6 address such as fe80::1%eth0, or a host name) into an address. An empty
// value gives the zero Addr: no local address is forced. A value that does not resolve is
// an error naming the variable. An IPv4-mapped IPv6 address is taken as the IPv4 one.
func ResolveLocal(ctx context.Context, value string) (netip.Addr, error) {
	if value == "" {
		return netip.Addr{}, nil
	}
	ip, err := ResolveIP(ctx, value)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s=%s: %w", EnvLocal, value, err)
	}
	return ip, nil
}

// ResolveIP returns the first address of host (an IP literal, brackets and zone allowed,
// or a name), preferring IPv4 for names that have both, as getaddrinfo does for most
// resolvers. IPv4-mapped addresses come back as IPv4.
func ResolveIP(ctx context.Context, host string) (netip.Addr, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return netip.Addr{}, fmt.Errorf("host %q not found", h)
		}
		return netip.Addr{}, fmt.Errorf("resolving %q: %w", h, err)
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("host %q has no address", h)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return ips[0], nil
}

// FamilyError is a local address that cannot reach a destination of the other IP
// family: a socket bound to an IPv4 address cannot connect to an IPv6 one, nor the other
// way round.
type FamilyError struct {
	What  string // how the local address was given: "INADDR_DEFAULT", "the local address"
	Local netip.Addr
	Dest  netip.Addr
}

func (e *FamilyError) Error() string {
	local := e.Local.String()
	if e.What == EnvLocal {
		local = EnvLocal + "=" + local
	} else if e.What != "" {
		local = e.What + " " + local
	}
	return fmt.Sprintf("%s is an %s address: it cannot reach the %s address %s", local, family(e.Local), family(e.Dest), e.Dest)
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// CheckFamily returns a *FamilyError when host is an IP literal of the other family than
// local, given as what ("INADDR_DEFAULT"). A host name passes (only its lookup, when
// connecting, tells), and so does any host when local is the zero Addr. Every tool checks
// the destinations it is given on the command line at start, before any socket opens.
func CheckFamily(what string, local netip.Addr, host string) error {
	if !local.IsValid() {
		return nil
	}
	dest, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if err != nil {
		return nil
	}
	dest = dest.Unmap()
	if dest.Is4() != local.Is4() {
		return &FamilyError{What: what, Local: local, Dest: dest}
	}
	return nil
}
