package main

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackProxySlowLoris: 200 clients of tcp-pf --accept-proxy that start a PROXY
// header and stall (half a version 1 line; a version 2 signature and half its fixed
// part), on IPv4 and IPv6, while clients with whole headers come. Each whole client must
// be served at once (a 64 KiB echo, by SHA-256), every staller reset by the header
// timeout (1 s) within a few seconds, never passed to the destination, and tcp-pf must hold
// no socket of theirs afterwards.
func TestAttackProxySlowLoris(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	p := startPF(t, "::1", "", "-d", be.Addr(), "--accept-proxy", "--accept-proxy-timeout", "1", "-q")
	v4 := startPF(t, "127.0.0.1", "", "-d", be.Addr(), "--accept-proxy", "--accept-proxy-timeout", "1", "-q")
	base := map[*proc]int{p: p.Sockets(t), v4: v4.Sockets(t)}
	starts := []string{"PROXY TCP4 192.0.2.1 ", string(proxyproto.SIGV2) + "\x21"}
	var stallers []net.Conn
	for i := range 200 {
		at := p
		if i%2 == 1 {
			at = v4
		}
		c := testkit.Dial(t, at.addr)
		if _, err := c.Write([]byte(starts[i/2%2])); err != nil {
			t.Fatal(err)
		}
		stallers = append(stallers, c)
	}
	held := time.Now()
	for i, at := range []*proc{p, v4, p, v4} {
		start := time.Now()
		c := testkit.Dial(t, at.addr)
		hdr := proxyproto.HeaderProxyFromAddrs(2, c.LocalAddr(), c.RemoteAddr())
		if _, err := hdr.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		testkit.RoundTrip(t, c, uint64(i), 64<<10)
		c.Close()
		if took := time.Since(start); took > time.Second {
			t.Errorf("a client with a whole header beside 200 stallers took %v, want well under 1s", took)
		}
	}
	if accepted := be.Accepts.Load(); accepted != 4 {
		t.Errorf("the destination got %d connections, want the 4 whole clients'", accepted)
	}
	for i, c := range stallers {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("staller %d: %v, want a reset by the header timeout", i, err)
		}
	}
	t.Logf("200 stallers reset %v after they stalled", time.Since(held).Round(time.Millisecond))
	for at, n := range base {
		testkit.WaitUntil(t, 5*time.Second, "tcp-pf's sockets back to what it had", func() bool { return at.Sockets(t) <= n })
		at.Stop(t, syscall.SIGTERM, 5*time.Second)
	}
}
