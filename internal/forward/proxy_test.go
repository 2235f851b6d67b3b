package forward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/proxyhdr"
	"shd-tcp-tools/internal/testkit"
)

func addrPort(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func wantHeader(t *testing.T, got testkit.Proxied, version byte, src, dst netip.AddrPort) {
	t.Helper()
	if got.Err != nil {
		t.Fatalf("destination: %v", got.Err)
	}
	h := got.Header
	s, d, ok := h.TCPAddrs()
	if !ok || h.Version != version || h.Command != proxyproto.PROXY {
		t.Fatalf("destination got a v%d %v header %v -> %v, want v%d PROXY", h.Version, h.Command, h.SourceAddr, h.DestinationAddr, version)
	}
	if gs, gd := addrPort(t, s), addrPort(t, d); gs != src || gd != dst {
		t.Fatalf("destination's header names %v -> %v, want %v -> %v", gs, gd, src, dst)
	}
}

// --send-proxy and --send-proxy-v2 name the client and the address it connected to, over
// IPv4 and IPv6; the header comes first, then --insert, then the client's bytes, and only
// the latter two are counted.
func TestSendProxy(t *testing.T) {
	t.Parallel()
	insert := []byte("inserted\r\n")
	for _, fam := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, version := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/v%d", fam, version), func(t *testing.T) {
				t.Parallel()
				be := testkit.StartProxyBackend(t, fam)
				pf := startServer(t, fam, Config{Dest: dest(t, be.Addr()), SendProxy: version, Insert: insert})
				c := testkit.Dial(t, pf.addr)
				const n = 1 << 20
				sent, err := testkit.Send(io.MultiWriter(c), 11, n)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.CloseWrite()
				r := be.Next(t)
				wantHeader(t, r, byte(version), addrPort(t, c.LocalAddr()), addrPort(t, c.RemoteAddr()))
				d := testkit.NewDigester()
				d.Write(insert)
				_, _ = io.Copy(d, io.LimitReader(testkit.NewStream(11), n))
				if want := d.Digest(); r.Digest != want {
					t.Fatalf("after the header: %v, want the insert then the client's %v", r.Digest, sent)
				}
				pf.log.WaitFor(t, fmt.Sprintf(`close #1 .*up=%d `, n+len(insert)), 1, 5*time.Second)
			})
		}
	}
}

// v1 and v2 headers as go-proxyproto writes them, for the tests' clients.
func headerFor(t testing.TB, version int, src, dst string) []byte {
	t.Helper()
	b, err := proxyhdr.Format(version, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --accept-proxy: the header's client is the client in the log, and what --send-proxy
// sends on (source and destination); the bytes that came with the header in the same
// segment are relayed exactly, both ways, and the header is not counted.
func TestAcceptProxy(t *testing.T) {
	t.Parallel()
	for _, fam := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, tc := range []struct {
			version  int
			src, dst string
		}{
			{1, "192.0.2.10:40001", "198.51.100.1:443"},
			{2, "192.0.2.10:40001", "198.51.100.1:443"},
			{1, "[2001:db8::10]:40002", "[2001:db8::1]:443"},
			{2, "[2001:db8::10]:40002", "[2001:db8::1]:443"},
		} {
			t.Run(fmt.Sprintf("%s/v%d/%s", fam, tc.version, tc.src), func(t *testing.T) {
				t.Parallel()
				// Echo: the client's bytes come back intact.
				echo := testkit.StartBackend(t, fam, testkit.Echo)
				pf := startServer(t, fam, Config{Dest: dest(t, echo.Addr()), AcceptProxy: true})
				c := testkit.Dial(t, pf.addr)
				first := append(headerFor(t, tc.version, tc.src, tc.dst), "first bytes\n"...)
				if _, err := c.Write(first); err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a failure fails, not hangs
				back := make([]byte, len("first bytes\n"))
				if _, err := io.ReadFull(c, back); err != nil || string(back) != "first bytes\n" {
					t.Fatalf("echo of the bytes after the header: %q, %v", back, err)
				}
				testkit.RoundTrip(t, c, 3, 1<<20)
				c.Close()
				src := netip.MustParseAddrPort(tc.src)
				pf.log.WaitFor(t, `open #1 `+regexp.QuoteMeta(src.String())+` -> `+regexp.QuoteMeta(echo.Addr())+`$`, 1, 5*time.Second)
				pf.log.WaitFor(t, fmt.Sprintf(`close #1 %s -> .* up=%d .* down=%d `, regexp.QuoteMeta(src.String()), 1<<20+12, 1<<20+12), 1, 5*time.Second)

				// With --send-proxy too, the header's addresses are passed on.
				be := testkit.StartProxyBackend(t, fam)
				pf2 := startServer(t, fam, Config{Dest: dest(t, be.Addr()), AcceptProxy: true, SendProxy: 3 - tc.version})
				c2 := testkit.Dial(t, pf2.addr)
				if _, err := c2.Write(headerFor(t, tc.version, tc.src, tc.dst)); err != nil {
					t.Fatal(err)
				}
				sent, _ := testkit.Send(c2, 4, 5000)
				_ = c2.CloseWrite()
				r := be.Next(t)
				wantHeader(t, r, byte(3-tc.version), src, netip.MustParseAddrPort(tc.dst))
				if r.Digest != sent {
					t.Fatalf("after the header: %v, want %v", r.Digest, sent)
				}
			})
		}
	}
}

// A header that arrives in pieces is put together from several reads, the loop waiting for
// each piece without blocking, and the bytes after it are relayed.
func TestAcceptProxyInPieces(t *testing.T) {
	t.Parallel()
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			t.Parallel()
			be := testkit.StartProxyBackend(t, "127.0.0.1:0")
			partial := make(chan struct{}, 64)
			pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), AcceptProxy: true, SendProxy: 1},
				func(s *Server) { s.partialHeader = func() { partial <- struct{}{} } })
			c := testkit.Dial(t, pf.addr)
			h := headerFor(t, version, "192.0.2.7:1234", "192.0.2.8:80")
			// One byte, then the signature's rest, then all but the last byte, each seen
			// by the loop before the next is sent.
			for _, piece := range [][]byte{h[:1], h[1:5], h[5 : len(h)-1]} {
				if _, err := c.Write(piece); err != nil {
					t.Fatal(err)
				}
				select {
				case <-partial:
				case <-time.After(5 * time.Second):
					t.Fatalf("the loop did not see the piece %q of the header", piece)
				}
			}
			// The last byte comes with the client's first data.
			payload := make([]byte, 3000)
			_, _ = io.ReadFull(testkit.NewStream(5), payload)
			if _, err := c.Write(append([]byte{h[len(h)-1]}, payload...)); err != nil {
				t.Fatal(err)
			}
			_ = c.CloseWrite()
			r := be.Next(t)
			wantHeader(t, r, 1, netip.MustParseAddrPort("192.0.2.7:1234"), netip.MustParseAddrPort("192.0.2.8:80"))
			if want := testkit.Expected(5, 3000); r.Digest != want {
				t.Fatalf("after the header: %v, want %v", r.Digest, want)
			}
			pf.log.WaitFor(t, `close #1 192\.0\.2\.7:1234 -> .* up=3000 `, 1, 5*time.Second)
		})
	}
}

// Clients without a valid header are refused and logged with their socket's address, and
// never reach the destination: garbage, a header too long, a malformed one, one cut off
// by the client's end, and none within the timeout.
func TestAcceptProxyRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		send  string
		close bool // half-close after sending
		why   string
	}{
		{"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, "not a PROXY protocol header"},
		{"too long", "PROXY TCP4 " + strings.Repeat("1", 200), false, "PROXY protocol header too long: no line end in the first 107 bytes"},
		{"malformed", "PROXY TCP4 192.0.2.1 192.0.2.300 1 2\r\n", false, "bad PROXY protocol header: invalid address"},
		{"port out of range", "PROXY TCP4 192.0.2.1 192.0.2.3 99999 2\r\n", false, "bad PROXY protocol header: invalid port number\n"},
		{"v2 huge", string(proxyproto.SIGV2) + "\x21\x11\xff\xff", false, "PROXY protocol header too long: "},
		{"cut off", "PROXY TCP4 192.0.2.1", true, "closed in the middle of its PROXY protocol header"},
		{"nothing then end", "", true, "closed before sending a PROXY protocol header"},
		{"nothing", "", false, "no PROXY protocol header within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
			pf := startServer(t, "[::1]:0", Config{Dest: dest(t, be.Addr()), AcceptProxy: true, AcceptProxyTimeout: 300 * time.Millisecond})
			c := testkit.Dial(t, pf.addr)
			start := time.Now()
			if _, err := c.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				_ = c.CloseWrite()
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			// A refusal is tcp-pf's own decision: a reset, never a FIN that looks like a
			// clean end.
			if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("refused client read %d, %v; want a reset", n, err)
			}
			if tc.name == "nothing" {
				if d := time.Since(start); d < 250*time.Millisecond {
					t.Errorf("closed after %v, before the 300ms timeout", d)
				}
			}
			why := regexp.QuoteMeta(strings.TrimSuffix(tc.why, "\n"))
			if strings.HasSuffix(tc.why, "\n") {
				why += "$" // the whole reason, in words: no parser's text after it
			}
			pf.log.WaitFor(t, `refused `+regexp.QuoteMeta(c.LocalAddr().String())+`: `+why, 1, 5*time.Second)
			testkit.WaitUntil(t, 5*time.Second, "the refused connection to end", func() bool { return pf.Open() == 0 })
			if n := be.Accepts.Load(); n != 0 {
				t.Errorf("destination accepted %d connections of a refused client", n)
			}
		})
	}
}

// -a is checked against the client the header names, not the proxy's socket.
func TestAcceptProxyAllowList(t *testing.T) {
	t.Parallel()
	al, err := allow.Parse(t.Context(), nil, []string{"192.0.2.0/24", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), AcceptProxy: true, Allow: al})
	for _, src := range []string{"192.0.2.99:1000", "[2001:db8::99]:1000"} {
		c := testkit.Dial(t, pf.addr) // from 127.0.0.1, which is not on the list
		if _, err := c.Write(headerFor(t, 2, src, "192.0.2.1:80")); err != nil {
			t.Fatal(err)
		}
		testkit.RoundTrip(t, c, 1, 4096)
		c.Close()
	}
	refused := testkit.Dial(t, pf.addr)
	if _, err := refused.Write(headerFor(t, 1, "203.0.113.5:2000", "192.0.2.1:80")); err != nil {
		t.Fatal(err)
	}
	_ = refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := refused.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("refused client read %d, %v; want the connection closed", n, err)
	}
	pf.log.WaitFor(t, `refused 203\.0\.113\.5:2000: not in the allow list$`, 1, 5*time.Second)
	if n := be.Accepts.Load(); n != 2 {
		t.Errorf("destination accepted %d connections, want the 2 allowed", n)
	}
}

// A LOCAL (v2) or UNKNOWN (v1) header names no client: the socket's addresses stand, in the
// log and in what --send-proxy sends on.
func TestAcceptProxyLocal(t *testing.T) {
	t.Parallel()
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string][]byte{"v2 local": local, "v1 unknown": []byte("PROXY UNKNOWN\r\n")} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			be := testkit.StartProxyBackend(t, "[::1]:0")
			pf := startServer(t, "[::1]:0", Config{Dest: dest(t, be.Addr()), AcceptProxy: true, SendProxy: 2})
			c := testkit.Dial(t, pf.addr)
			if _, err := c.Write(append(h, "after"...)); err != nil {
				t.Fatal(err)
			}
			_ = c.CloseWrite()
			r := be.Next(t)
			wantHeader(t, r, 2, addrPort(t, c.LocalAddr()), addrPort(t, c.RemoteAddr()))
			if want := (testkit.Digest{N: 5}); r.Digest.N != want.N {
				t.Fatalf("after the header: %v, want 5 bytes", r.Digest)
			}
			pf.log.WaitFor(t, `open #1 `+regexp.QuoteMeta(c.LocalAddr().String())+` -> `, 1, 5*time.Second)
		})
	}
}

// A stop cuts clients that are still to send their header, with a reset, and logs them.
func TestAcceptProxyStop(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), AcceptProxy: true, Grace: -1})
	var wg sync.WaitGroup
	c := testkit.Dial(t, pf.addr)
	if _, err := c.Write([]byte("PROXY ")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitUntil(t, 5*time.Second, "the client to be accepted", func() bool { return pf.Open() == 1 })
	wg.Go(func() {
		if err := pf.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %d, %v; want a reset", n, err)
	}
	wg.Wait()
	pf.log.WaitFor(t, `refused 127\.0\.0\.1:\d+: cut: stopped before its PROXY protocol header came$`, 1, time.Second)
}
