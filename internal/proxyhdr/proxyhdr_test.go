package proxyhdr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
)

// v2 builds a version 2 header with go-proxyproto, the reference the parser is held to.
func v2(t testing.TB, cmd proxyproto.ProtocolVersionAndCommand, proto proxyproto.AddressFamilyAndProtocol, src, dst net.Addr) []byte {
	t.Helper()
	h := proxyproto.Header{Version: 2, Command: cmd, TransportProtocol: proto, SourceAddr: src, DestinationAddr: dst}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tcp(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// Every valid header is framed whole, parsed to the addresses it names, and each of its
// proper prefixes asks for more bytes; the bytes after a header are never counted in.
func TestValidHeaders(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		name string
		raw  []byte
		want Header
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
			Header{1, true, ap("192.0.2.1:56324"), ap("198.51.100.2:443")}},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 65535 1\r\n"),
			Header{1, true, ap("[2001:db8::1]:65535"), ap("[2001:db8::2]:1")}},
		{"v1 tcp6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1000 80\r\n"),
			Header{1, true, ap("192.0.2.1:1000"), ap("192.0.2.2:80")}},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1}},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), Header{Version: 1}},
		{"v2 tcp4", v2(t, proxyproto.PROXY, proxyproto.TCPv4, tcp("192.0.2.1:1234"), tcp("198.51.100.2:80")),
			Header{2, true, ap("192.0.2.1:1234"), ap("198.51.100.2:80")}},
		{"v2 tcp6", v2(t, proxyproto.PROXY, proxyproto.TCPv6, tcp("[2001:db8::1]:1234"), tcp("[2001:db8::2]:80")),
			Header{2, true, ap("[2001:db8::1]:1234"), ap("[2001:db8::2]:80")}},
		{"v2 local", v2(t, proxyproto.LOCAL, proxyproto.UNSPEC, nil, nil), Header{Version: 2}},
		{"v2 local with addresses", v2(t, proxyproto.LOCAL, proxyproto.TCPv4, tcp("192.0.2.1:1"), tcp("192.0.2.2:2")), Header{Version: 2}},
		{"v2 udp", v2(t, proxyproto.PROXY, proxyproto.UDPv4,
			net.UDPAddrFromAddrPort(ap("192.0.2.1:53")), net.UDPAddrFromAddrPort(ap("192.0.2.2:53"))), Header{Version: 2}},
		{"v2 unix", v2(t, proxyproto.PROXY, proxyproto.UnixStream,
			&net.UnixAddr{Net: "unix", Name: "/a"}, &net.UnixAddr{Net: "unix", Name: "/b"}), Header{Version: 2}},
	}
	// A v2 header with a TLV (PP2_TYPE_NOOP, 3 bytes of padding) after the addresses.
	withTLV := v2(t, proxyproto.PROXY, proxyproto.TCPv4, tcp("192.0.2.1:1234"), tcp("198.51.100.2:80"))
	withTLV = append(withTLV, 0x04, 0x00, 0x03, 0, 0, 0)
	binary.BigEndian.PutUint16(withTLV[14:], binary.BigEndian.Uint16(withTLV[14:])+6)
	cases = append(cases, struct {
		name string
		raw  []byte
		want Header
	}{"v2 tcp4 with a TLV", withTLV, Header{2, true, ap("192.0.2.1:1234"), ap("198.51.100.2:80")}})

	var p Parser
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range len(tc.raw) {
				if n, err := Len(tc.raw[:i]); n != 0 || err != nil {
					t.Fatalf("Len of the first %d of %d bytes = %d, %v; want 0, nil (more to come)", i, len(tc.raw), n, err)
				}
			}
			// The client's first bytes may follow in the same read, even ones that look
			// like a header's end.
			for _, after := range []string{"", "GET / HTTP/1.1\r\n", "\n\r\n", strings.Repeat("x", 200)} {
				b := append(append([]byte{}, tc.raw...), after...)
				if n, err := Len(b); n != len(tc.raw) || err != nil {
					t.Fatalf("Len with %q after = %d, %v; want %d", after, n, err, len(tc.raw))
				}
			}
			got, err := p.Parse(tc.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Parse = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Bytes that cannot be a header are refused as soon as that is clear; malformed headers
// are framed, then refused by Parse.
func TestBadHeaders(t *testing.T) {
	v2hdr := v2(t, proxyproto.PROXY, proxyproto.TCPv4, tcp("192.0.2.1:1234"), tcp("198.51.100.2:80"))
	long := append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 200)...)
	for _, tc := range []struct {
		name string
		b    []byte
		want error // of Len; nil: Len frames it and Parse refuses it
	}{
		{"http", []byte("GET / HTTP/1.1\r\n"), ErrNotProxy},
		{"one byte", []byte("G"), ErrNotProxy},
		{"tls", []byte{0x16, 0x03, 0x01, 0x00}, ErrNotProxy},
		{"almost v1", []byte("PROXZ TCP4"), ErrNotProxy},
		{"almost v2", append(append([]byte{}, proxyproto.SIGV2[:11]...), 'X'), ErrNotProxy},
		{"v2 version 3", append(append([]byte{}, proxyproto.SIGV2...), 0x31), ErrNotProxy},
		{"v1 too long", long[:maxV1], ErrTooLong},
		{"v1 too long by far", long, ErrTooLong},
		{"v2 too long", append(append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11), 0xff, 0xff), ErrTooLong},
		{"v1 no CR", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n"), nil},
		{"v1 bad address", []byte("PROXY TCP4 192.0.2.300 192.0.2.2 1 2\r\n"), nil},
		{"v1 v6 address in TCP4", []byte("PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n"), nil},
		{"v1 bad port", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n"), nil},
		{"v1 extra field", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n"), nil},
		{"v1 bad protocol", []byte("PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n"), nil},
		{"v1 no space", []byte("PROXYTCP4 192.0.2.1 192.0.2.2 1 2\r\n"), nil},
		{"v2 bad command", append(append([]byte{}, v2hdr[:12]...), append([]byte{0x2f}, v2hdr[13:]...)...), nil},
		{"v2 short address block", append(append([]byte{}, v2hdr[:14]...), 0x00, 0x04, 1, 2, 3, 4), nil},
		{"v2 proxy unspec", append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x00, 0x00, 0x00), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Len(tc.b)
			if tc.want != nil {
				if !errors.Is(err, tc.want) || n != 0 {
					t.Fatalf("Len = %d, %v; want %v", n, err, tc.want)
				}
				return
			}
			if err != nil || n != len(tc.b) {
				t.Fatalf("Len = %d, %v; want %d, nil", n, err, len(tc.b))
			}
			var p Parser
			if h, err := p.Parse(tc.b); err == nil {
				t.Fatalf("Parse = %+v, nil; want an error", h)
			}
		})
	}
}

// Format writes what Len and Parse read back, in both versions and families, mixed
// families as IPv6.
func TestFormatRoundTrip(t *testing.T) {
	ap := netip.MustParseAddrPort
	var p Parser
	for _, tc := range []struct{ src, dst, wantSrc, wantDst string }{
		{"127.0.0.1:40000", "127.0.0.1:8080", "", ""},
		{"[::1]:40000", "[::1]:8080", "", ""},
		{"192.0.2.1:1", "[2001:db8::1]:2", "192.0.2.1:1", ""},
		{"[fe80::1%lo]:5", "[fe80::2%lo]:6", "[fe80::1]:5", "[fe80::2]:6"},
	} {
		for _, version := range []int{1, 2} {
			b, err := Format(version, ap(tc.src), ap(tc.dst))
			if err != nil {
				t.Fatalf("Format(%d, %s, %s): %v", version, tc.src, tc.dst, err)
			}
			if n, err := Len(b); n != len(b) || err != nil {
				t.Fatalf("Len(Format(%d, %s, %s)) = %d, %v; want %d", version, tc.src, tc.dst, n, err, len(b))
			}
			h, err := p.Parse(b)
			if err != nil {
				t.Fatalf("Parse(Format(%d, %s, %s)) = %v", version, tc.src, tc.dst, err)
			}
			want := Header{Version: version, Addressed: true, Source: ap(tc.src), Dest: ap(tc.dst)}
			if tc.wantSrc != "" {
				want.Source = ap(tc.wantSrc)
			}
			if tc.wantDst != "" {
				want.Dest = ap(tc.wantDst)
			}
			if h != want {
				t.Errorf("Parse(Format(%d, %s, %s)) = %+v, want %+v", version, tc.src, tc.dst, h, want)
			}
		}
	}
	if b, err := Format(1, ap("127.0.0.1:1"), ap("127.0.0.1:2")); err != nil || string(b) != "PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n" {
		t.Errorf("Format v1 = %q, %v", b, err)
	}
	if _, err := Format(3, ap("127.0.0.1:1"), ap("127.0.0.1:2")); err == nil {
		t.Error("Format version 3 succeeded")
	}
	if _, err := Format(1, netip.AddrPort{}, ap("127.0.0.1:2")); err == nil {
		t.Error("Format without a source succeeded")
	}
}

// FuzzLenParse: Len never claims more than it was given, a framed header is stable under
// more bytes after it, Parse never panics, and what Parse accepts with addresses Format
// writes back to the same addresses.
func FuzzLenParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello"))
	f.Add([]byte("PROXY TCP6 ::1 ::1 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2(f, proxyproto.PROXY, proxyproto.TCPv6, tcp("[2001:db8::1]:1234"), tcp("[2001:db8::2]:80")))
	f.Add(v2(f, proxyproto.LOCAL, proxyproto.UNSPEC, nil, nil))
	f.Add([]byte("GET / HTTP/1.0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := Len(b)
		if err != nil || n == 0 {
			return
		}
		if n > len(b) || n > MaxLen {
			t.Fatalf("Len = %d for %d bytes", n, len(b))
		}
		if m, err := Len(append(append([]byte{}, b[:n]...), "PROXY \r\n"...)); m != n || err != nil {
			t.Fatalf("Len with bytes after = %d, %v; want %d", m, err, n)
		}
		var p Parser
		h, err := p.Parse(b[:n])
		if err != nil || !h.Addressed {
			return
		}
		out, err := Format(h.Version, h.Source, h.Dest)
		if err != nil {
			t.Fatalf("Format(%+v): %v", h, err)
		}
		h2, err := p.Parse(out)
		if err != nil || h2 != h {
			t.Fatalf("round trip of %+v: %+v, %v (%q)", h, h2, err, out)
		}
	})
}
