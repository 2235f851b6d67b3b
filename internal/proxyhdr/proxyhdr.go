// Package proxyhdr reads and writes PROXY protocol headers (versions 1 and 2) for code that
// reads sockets itself, such as an event loop: Len finds where a header ends in the bytes
// that have arrived so far, so that a caller can peek (MSG_PEEK) and then consume exactly
// the header and not one byte of the data after it; a Parser parses that header with
// github.com/pires/go-proxyproto without ever blocking; Format writes the header that
// names a client. The protocol is HAProxy's proxy-protocol.txt.
package proxyhdr

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/pires/go-proxyproto"
)

const (
	// maxV1 is the longest version 1 header, CRLF included.
	maxV1 = 107
	// v2Prefix is the fixed part of a version 2 header: signature, version and command,
	// family and protocol, and the length of what follows.
	v2Prefix = 16
	// MaxLen is the longest header Len accepts: a version 2 header with up to
	// go-proxyproto's limit of address block and TLVs (4 KiB). A buffer this long always
	// holds a whole header.
	MaxLen = v2Prefix + 4096
)

// Errors of Len.
var (
	// ErrNotProxy: the bytes do not start a PROXY header.
	ErrNotProxy = errors.New("not a PROXY protocol header")
	// ErrTooLong: the header would be longer than the protocol or MaxLen allows.
	ErrTooLong = errors.New("PROXY protocol header too long")
)

// Len returns the length of the PROXY header that b starts with: more than 0 when b holds
// all of it (the bytes after it are not the header's), 0 when b is the start of a header
// and more bytes must come, or an error when b cannot start one (ErrNotProxy, ErrTooLong).
// Len only frames; Parse checks the header's content.
func Len(b []byte) (int, error) {
	if n := min(len(b), len(proxyproto.SIGV1)); bytes.Equal(b[:n], proxyproto.SIGV1[:n]) {
		if len(b) < len(proxyproto.SIGV1) {
			return 0, nil
		}
		if i := bytes.IndexByte(b[:min(len(b), maxV1)], '\n'); i >= 0 {
			return i + 1, nil
		}
		if len(b) >= maxV1 {
			return 0, fmt.Errorf("%w: no line end in the first %d bytes of a version 1 header", ErrTooLong, maxV1)
		}
		return 0, nil
	}
	if n := min(len(b), len(proxyproto.SIGV2)); n == 0 || !bytes.Equal(b[:n], proxyproto.SIGV2[:n]) {
		return 0, ErrNotProxy
	}
	if len(b) > len(proxyproto.SIGV2) && b[len(proxyproto.SIGV2)]>>4 != 2 {
		return 0, fmt.Errorf("%w: version %d after a version 2 signature", ErrNotProxy, b[len(proxyproto.SIGV2)]>>4)
	}
	if len(b) < v2Prefix {
		return 0, nil
	}
	n := v2Prefix + int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxLen {
		return 0, fmt.Errorf("%w: a version 2 header of %d bytes (at most %d)", ErrTooLong, n, MaxLen)
	}
	if len(b) < n {
		return 0, nil
	}
	return n, nil
}

// Header is what a PROXY header says about a connection.
type Header struct {
	Version int // 1 or 2
	// Addressed is true when the header names a TCP connection over IPv4 or IPv6. It is
	// false for the LOCAL command (a proxy's own connection, such as a health check), the
	// UNKNOWN protocol and families other than TCP: then the header says nothing about
	// the client, and the socket's own addresses stand.
	Addressed bool
	// Source is the client's address and port, Dest the address it connected to; only
	// when Addressed. IPv4-mapped IPv6 addresses are given in their IPv4 form.
	Source, Dest netip.AddrPort
}

// A Parser parses headers that Len framed. It keeps its buffers from one header to the
// next, so parsing allocates little; it is not safe for simultaneous use.
type Parser struct {
	src bytes.Reader
	r   *bufio.Reader
}

// Parse parses exactly one whole header, b[:Len(b)], as go-proxyproto reads it.
func (p *Parser) Parse(b []byte) (Header, error) {
	p.src.Reset(b)
	if p.r == nil {
		p.r = bufio.NewReaderSize(&p.src, MaxLen)
	} else {
		p.r.Reset(&p.src)
	}
	h, err := proxyproto.Read(p.r)
	if err != nil {
		return Header{}, fmt.Errorf("bad PROXY protocol header: %w", inWords(err))
	}
	if p.r.Buffered() != 0 || p.src.Len() != 0 {
		return Header{}, errors.New("bad PROXY protocol header: its length does not match its content")
	}
	out := Header{Version: int(h.Version)}
	if h.Command != proxyproto.PROXY || (h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6) {
		return out, nil
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		return Header{}, errors.New("bad PROXY protocol header: no TCP addresses")
	}
	out.Addressed, out.Source, out.Dest = true, unmap(src.AddrPort()), unmap(dst.AddrPort())
	return out, nil
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Format returns the header of the given version (1 or 2) for a TCP connection from src to
// dst. Addresses of different families are both given as IPv6 (an IPv4 one mapped).
func Format(version int, src, dst netip.AddrPort) ([]byte, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("PROXY protocol version %d: want 1 or 2", version)
	}
	src, dst = unmap(src), unmap(dst)
	if !src.Addr().IsValid() || !dst.Addr().IsValid() {
		return nil, fmt.Errorf("formatting a PROXY protocol header for %s -> %s: no address", src, dst)
	}
	proto, as := proxyproto.TCPv4, func(a netip.AddrPort) *net.TCPAddr {
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.Addr().WithZone(""), a.Port()))
	}
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		proto, as = proxyproto.TCPv6, func(a netip.AddrPort) *net.TCPAddr {
			return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port()))
		}
	}
	h := proxyproto.Header{
		Version:           byte(version),
		Command:           proxyproto.PROXY,
		TransportProtocol: proto,
		SourceAddr:        as(src),
		DestinationAddr:   as(dst),
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("formatting a PROXY protocol header for %s -> %s: %w", src, dst, err)
	}
	return b, nil
}

// proxyprotoErrs are go-proxyproto's reasons for refusing a header. Some come wrapped
// with the text of a Go parser (strconv, netip), which tells a person nothing more.
var proxyprotoErrs = []error{
	proxyproto.ErrInvalidAddress, proxyproto.ErrInvalidPortNumber, proxyproto.ErrInvalidLength,
	proxyproto.ErrLineMustEndWithCrlf, proxyproto.ErrVersion1HeaderTooLong,
	proxyproto.ErrCantReadVersion1Header, proxyproto.ErrUnknownProxyProtocolVersion,
	proxyproto.ErrUnsupportedProtocolVersionAndCommand, proxyproto.ErrUnsupportedAddressFamilyAndProtocol,
	proxyproto.ErrCantReadProtocolVersionAndCommand, proxyproto.ErrCantReadAddressFamilyAndProtocol,
	proxyproto.ErrCantReadLength, proxyproto.ErrTruncatedTLV, proxyproto.ErrMalformedTLV,
	proxyproto.ErrIncompatibleTLV, proxyproto.ErrNoProxyProtocol,
}

// inWords returns go-proxyproto's reason for err without its "proxyproto: " prefix and
// without the parser text it may wrap ("invalid port number", not "...: strconv.ParseUint:
// parsing ..."); any other error as it is.
func inWords(err error) error {
	for _, e := range proxyprotoErrs {
		if errors.Is(err, e) {
			return errors.New(strings.TrimPrefix(e.Error(), "proxyproto: "))
		}
	}
	return err
}
