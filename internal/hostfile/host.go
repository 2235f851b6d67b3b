package hostfile

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseHost checks a HOST field as it may appear in a host file and splits it into host and
// port. The accepted forms are a host name, an IPv4 literal, a bare IPv6 literal (a field
// with two or more colons and no brackets), NAME:PORT, IPV4:PORT and [IPV6]:PORT, with PORT
// a decimal number from 1 to 65535. port is 0 when the field names none. host is returned
// as written, without brackets.
func ParseHost(field string) (host string, port int, err error) {
	host, port, err = parseHost(field)
	if err != nil {
		return "", 0, fmt.Errorf("host %q: %w", field, err)
	}
	return host, port, nil
}

func parseHost(field string) (host string, port int, err error) {
	if field == "" {
		return "", 0, errors.New("empty")
	}
	if field[0] == '[' {
		end := strings.IndexByte(field, ']')
		if end < 0 || end+1 >= len(field) || field[end+1] != ':' {
			return "", 0, errors.New("a bracketed IPv6 address must be followed by :PORT")
		}
		host = field[1:end]
		if err := checkIPv6(host); err != nil {
			return "", 0, err
		}
		port, err = parsePort(field[end+2:])
		return host, port, err
	}
	switch strings.Count(field, ":") {
	case 0:
		return field, 0, checkName(field)
	case 1:
		i := strings.IndexByte(field, ':')
		host = field[:i]
		if host == "" {
			return "", 0, errors.New("missing host before the port")
		}
		if err := checkName(host); err != nil {
			return "", 0, err
		}
		port, err = parsePort(field[i+1:])
		return host, port, err
	default:
		if err := checkIPv6(field); err != nil {
			return "", 0, fmt.Errorf("%v (with a port, write [ADDRESS]:PORT)", err)
		}
		return field, 0, nil
	}
}

// checkIPv6 accepts an IPv6 literal, with an optional zone ("fe80::1%eth0").
func checkIPv6(s string) error {
	if strings.ContainsAny(s, "[]") {
		return errors.New("not a valid IPv6 address")
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return errors.New("not a valid IPv6 address")
	}
	return nil
}

// checkName accepts an IPv4 literal or a DNS host name: dot-separated labels of letters,
// digits, '-' and '_' (no label starting or ending with '-'), an optional final dot, at
// most 253 characters. A name whose last label is all digits must be a valid IPv4 literal,
// so "10.0.0.300" and "1.2.3" are rejected rather than sent to DNS.
func checkName(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		if strings.Contains(s, ":") {
			return errors.New("not a host name or IPv4 address")
		}
		return nil
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" || len(name) > 253 {
		return errors.New("not a valid host name")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("not a valid host name")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("not a valid host name (a label starts or ends with '-')")
		}
		for _, c := range l { // runes, so that a character is named as it was typed
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Errorf("not a valid host name (character %q)", c)
			}
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return errors.New("not a valid IPv4 address")
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parsePort reads a decimal port number from 1 to 65535.
func parsePort(s string) (int, error) {
	if !allDigits(s) {
		return 0, fmt.Errorf("port %q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %s is out of range 1..65535", s)
	}
	return int(n), nil
}
