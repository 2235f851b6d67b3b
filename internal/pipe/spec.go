// Package pipe is the engine of tcppipe: a one-way, zero-copy byte pipe between stdin or
// stdout and one TCP endpoint (a connection it makes, or one it accepts), with rate
// limiting, throughput reports and host-file accounting.
package pipe

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"shd-tcp-tools/internal/endpoint"
)

// Kind says what an end of the pipe is.
type Kind int

// The kinds of pipe ends.
const (
	Stdio   Kind = iota // "-": stdin as the source, stdout as the destination
	Listen              // ":PORT": accept one connection
	Connect             // "HOST PORT": connect out; HOST "." picks from the network file
)

// End is one side of the pipe as given on the command line.
type End struct {
	Kind Kind
	// Endpoint is the address to listen on (Host empty) or to connect to.
	Endpoint endpoint.Endpoint
	// Least is set for host "." : the host comes from the network file, Endpoint.Port is
	// the port for entries that name none.
	Least bool
}

// Network reports whether the end is a socket.
func (e End) Network() bool { return e.Kind != Stdio }

func (e End) String() string {
	switch e.Kind {
	case Stdio:
		return "-"
	case Listen:
		return fmt.Sprintf(":%d", e.Endpoint.Port)
	}
	if e.Least {
		return fmt.Sprintf(". %d", e.Endpoint.Port)
	}
	return e.Endpoint.String()
}

// ParseEnds reads SOURCE and DESTINATION from the positional arguments: each is "-",
// ":PORT", or the two words "HOST PORT". Both being network ends is an error.
func ParseEnds(args []string) (src, dst End, err error) {
	var ends []End
	for len(args) > 0 && len(ends) < 2 {
		e, used, err := parseEnd(args)
		if err != nil {
			return End{}, End{}, err
		}
		ends = append(ends, e)
		args = args[used:]
	}
	switch {
	case len(ends) < 2:
		return End{}, End{}, fmt.Errorf("missing %s: want SOURCE DESTINATION, each -, :PORT or HOST PORT", [...]string{"SOURCE", "DESTINATION"}[len(ends)])
	case len(args) > 0:
		return End{}, End{}, fmt.Errorf("unexpected argument %q after SOURCE and DESTINATION", args[0])
	case ends[0].Network() && ends[1].Network():
		return End{}, End{}, fmt.Errorf("SOURCE and DESTINATION are both network endpoints (%s, %s): one of them must be -", ends[0], ends[1])
	}
	return ends[0], ends[1], nil
}

func parseEnd(args []string) (End, int, error) {
	a := args[0]
	switch {
	case a == "-":
		return End{Kind: Stdio}, 1, nil
	case strings.HasPrefix(a, ":") && strings.Count(a, ":") == 1:
		p, err := endpoint.ParsePort(a[1:])
		if err != nil {
			return End{}, 0, fmt.Errorf("listen %q: %w", a, err)
		}
		return End{Kind: Listen, Endpoint: endpoint.Endpoint{Port: p}}, 1, nil
	}
	if ep, err := endpoint.ParseHostPort(a); err == nil && !isIPv6(a) {
		// tcp-pf's and socat's one word; netcat's two are what tcppipe takes.
		return End{}, 0, fmt.Errorf("%q: HOST and PORT are two words here: %s %s", a, ep.Host, a[strings.LastIndexByte(a, ':')+1:])
	}
	if len(args) < 2 || args[1] == "-" || strings.HasPrefix(args[1], ":") {
		if _, err := endpoint.ParsePort(a); err == nil && strings.Trim(a, "0123456789") == "" {
			return End{}, 0, fmt.Errorf("%q is not an end: write :%s to listen on port %s, or HOST %s to connect", a, a, a, a)
		}
		return End{}, 0, fmt.Errorf("host %q needs a PORT after it, as a word of its own: %s PORT", a, a)
	}
	host, err := parseHost(a)
	if err != nil {
		return End{}, 0, err
	}
	p, err := endpoint.ParsePort(args[1])
	if err != nil {
		return End{}, 0, fmt.Errorf("host %s: %w", a, err)
	}
	return End{Kind: Connect, Endpoint: endpoint.Endpoint{Host: host, Port: p}, Least: host == "."}, 2, nil
}

// isIPv6 reports whether a is a bare IPv6 literal, whose colons are not a port's.
func isIPv6(a string) bool {
	ip, err := netip.ParseAddr(a)
	return err == nil && ip.Is6()
}

// parseHost checks the HOST word of a "HOST PORT" end: a name, an IPv4 literal, or an IPv6
// literal, bare or in brackets (brackets are removed). Whether a name resolves is only
// known when connecting; what can never be a host is a usage error now.
func parseHost(a string) (string, error) {
	host := a
	if strings.ContainsAny(a, "[]") {
		host = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() || len(host)+2 != len(a) {
			return "", fmt.Errorf("host %q: brackets must enclose an IPv6 address, as in [::1]", a)
		}
	}
	switch {
	case host == "":
		return "", errors.New("empty host: want a name or an IP address before the PORT")
	case strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", fmt.Errorf("host %q: blanks and control characters are not allowed", a)
	}
	return host, nil
}
