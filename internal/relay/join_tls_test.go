package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tlslink"
)

// tlsChain is user <-> (client ... server) <-> backend with TLS between server and
// backend: Join relays a plain side and a TLS side, as the tunnel does; with wire, the
// relay's TLS is over a Wire (the tunnel's bulk path), else over the TCP connection.
type tlsChain struct {
	user       *net.TCPConn
	backend    *tls.Conn
	backendTCP *net.TCPConn
	result     chan Result
	cancel     context.CancelFunc
}

func newTLSChain(t *testing.T, network, addr string, wire bool) *tlsChain {
	t.Helper()
	return newTLSChainOver(t, network, addr, wire, nil)
}

// newTLSChainOver is newTLSChain with the backend's TLS over wrap(its TCP connection)
// (nil: the connection itself).
func newTLSChainOver(t *testing.T, network, addr string, wire bool, wrap func(net.Conn) net.Conn) *tlsChain {
	t.Helper()
	srv, err := tlslink.LoadServer("", filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tlslink.NewPinned([]string{srv.Pin})
	if err != nil {
		t.Fatal(err)
	}
	relayClient, user := pair(t, network, addr)
	backendTCP, relayServer := pair(t, network, addr)
	var backendUnder net.Conn = backendTCP
	if wrap != nil {
		backendUnder = wrap(backendTCP)
	}
	backend := tls.Server(backendUnder, srv.Config())
	var below net.Conn = relayServer
	if wire {
		below = overWire{NewWire(relayServer)} // a reader over the Wire, as the tunnel's
	}
	layered := tls.Client(below, cli.Config())
	errc := make(chan error, 1)
	go func() { errc <- backend.Handshake() }()
	if err := layered.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &tlsChain{user: user, backend: backend, backendTCP: backendTCP, result: make(chan Result, 1), cancel: cancel}
	go func() { c.result <- Join(ctx, relayClient, layered, Options{HalfClose: true}) }()
	for _, conn := range []net.Conn{user, backendTCP} {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	}
	return c
}

// overWire is a type over a Wire that embeds it, as the tunnel's record reader does: Join
// still finds the Wire under the TLS session.
type overWire struct{ *Wire }

func (c *tlsChain) wait(t *testing.T) Result {
	t.Helper()
	return (&chain{result: c.result}).wait(t)
}

// TestJoinTLSHalfClose: through a TLS side, a FIN from the user reaches the backend as
// close_notify followed by a FIN, the backend's late answer still flows back, and its
// close_notify and FIN reach the user as a FIN; every byte both ways, over IPv4 and IPv6.
func TestJoinTLSHalfClose(t *testing.T) {
	for _, tc := range []struct {
		network, addr string
		wire          bool
	}{{"tcp4", "127.0.0.1:0", true}, {"tcp6", "[::1]:0", true}, {"tcp4", "127.0.0.1:0", false}} {
		t.Run(fmt.Sprintf("%s/wire=%v", tc.network, tc.wire), func(t *testing.T) {
			c := newTLSChain(t, tc.network, tc.addr, tc.wire)
			up, down := randomBytes(t, 3<<20+5), randomBytes(t, 2<<20+3)
			errc := make(chan error, 1)
			go sendAndHash(c.user, up, errc)
			got, err := io.ReadAll(c.backend) // to close_notify
			if err != nil || !bytes.Equal(got, up) {
				t.Fatalf("backend read %d bytes (equal %v), %v", len(got), bytes.Equal(got, up), err)
			}
			// After close_notify the TCP under it ends too: a FIN, not a reset.
			var b [1]byte
			if n, err := c.backendTCP.Read(b[:]); n != 0 || !errors.Is(err, io.EOF) {
				t.Fatalf("after close_notify the TCP connection gave %d bytes, %v; want EOF", n, err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			// The other direction still flows after the half-close.
			go c.backendSends(down, errc)
			n, sum, err := readAll(c.user)
			if err != nil || n != len(down) || sum != sha256Of(down) {
				t.Fatalf("user read %d bytes, want %d (sum ok %v), %v", n, len(down), sum == sha256Of(down), err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			r := c.wait(t)
			if r.Up != int64(len(up)) || r.Down != int64(len(down)) || r.End != EndClientClosed {
				t.Errorf("result %+v", r)
			}
		})
	}
}

// TestJoinTLSReset: a reset on either side is passed on as a reset, never as close_notify
// (which would make a cut transfer look complete), and so is Join's own stop.
func TestJoinTLSReset(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(c *tlsChain)
		end  string
	}{
		{"user resets", func(c *tlsChain) { _ = c.user.SetLinger(0); c.user.Close() }, EndClientReset},
		{"backend resets", func(c *tlsChain) { _ = c.backendTCP.SetLinger(0); c.backendTCP.Close() }, EndServerReset},
		{"stopped", func(c *tlsChain) { c.cancel() }, EndStopped},
	} {
		for _, nw := range []struct {
			network, addr string
			wire          bool
		}{{"tcp4", "127.0.0.1:0", true}, {"tcp6", "[::1]:0", true}, {"tcp4", "127.0.0.1:0", false}} {
			t.Run(fmt.Sprintf("%s/%s/wire=%v", tc.name, nw.network, nw.wire), func(t *testing.T) {
				testJoinTLSReset(t, newTLSChain(t, nw.network, nw.addr, nw.wire), tc.name, tc.cut, tc.end)
			})
		}
	}
}

// testJoinTLSReset sends a partial upload through c, cuts it by cut, and checks that
// each side not cut sees a reset and that the relay ends with end.
func testJoinTLSReset(t *testing.T, c *tlsChain, name string, cut func(*tlsChain), end string) {
	t.Helper()
	if _, err := c.user.Write([]byte("partial upload")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := io.ReadFull(c.backend, buf[:14]); err != nil || string(buf[:n]) != "partial upload" {
		t.Fatalf("backend read %q, %v", buf[:n], err)
	}
	cut(c)
	if name != "backend resets" {
		_, err := c.backend.Read(buf)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("backend saw %v, want a reset", err)
		}
	}
	if name != "user resets" {
		_, err := c.user.Read(buf)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("user saw %v, want a reset", err)
		}
	}
	if r := c.wait(t); r.End != end {
		t.Errorf("end %q, want %q", r.End, end)
	}
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

// BenchmarkJoinTLS moves bytes through Join between a plain side and a TLS side, with
// Progress set as the tunnel sets it: up from the plain side into the TLS side (Join
// encrypts, the test's TLS peer decrypts), down the other way. With wire, Join's TLS is
// over a Wire (the tunnel's bulk path); without, over the TCP connection (the copy through
// a 32 KiB buffer that the tunnel used before). cpu-s/GiB is the whole process's CPU time
// (Join and the test's peer, whose part is the same in every case) per GiB moved.
func BenchmarkJoinTLS(b *testing.B) {
	for _, wire := range []bool{true, false} {
		for _, dir := range []string{"up", "down"} {
			b.Run(fmt.Sprintf("wire=%v/%s", wire, dir), func(b *testing.B) { benchJoinTLS(b, wire, dir == "up") })
		}
	}
}

func benchJoinTLS(b *testing.B, wire, upward bool) {
	srv, err := tlslink.LoadServer("", filepath.Join(b.TempDir(), "key"))
	if err != nil {
		b.Fatal(err)
	}
	cli, _ := tlslink.NewPinned([]string{srv.Pin})
	relayClient, user := pair(b, "tcp4", "127.0.0.1:0")
	backendTCP, relayServer := pair(b, "tcp4", "127.0.0.1:0")
	backend := tls.Server(backendTCP, srv.Config())
	var under net.Conn = relayServer
	if wire {
		under = NewWire(relayServer)
	}
	layered := tls.Client(under, cli.Config())
	go func() { _ = backend.Handshake() }()
	if err := layered.Handshake(); err != nil {
		b.Fatal(err)
	}
	var moved atomic.Int64
	go Join(context.Background(), relayClient, layered, Options{HalfClose: true, Progress: func(_ bool, n int64) { moved.Add(n) }})
	var src io.Writer = user
	var dst io.Reader = backend
	var srcEnd func() error = user.CloseWrite
	if !upward {
		src, dst, srcEnd = backend, user, backend.CloseWrite
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	done := make(chan int64, 1)
	go func() { n, _ := io.Copy(io.Discard, dst); done <- n }()
	b.SetBytes(chunk)
	before := testkit.CPUTime()
	b.ResetTimer()
	for b.Loop() {
		if _, err := src.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = srcEnd()
	n := <-done
	b.StopTimer()
	b.ReportMetric((testkit.CPUTime()-before).Seconds()/(float64(n)/(1<<30)), "cpu-s/GiB")
}
