package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/tlslink"
)

// tlsChain is user <-> (client ... server) <-> backend with TLS between server and
// backend: Join relays a plain side and a TLS side, as the tunnel does.
type tlsChain struct {
	user       *net.TCPConn
	backend    *tls.Conn
	backendTCP *net.TCPConn
	result     chan Result
	cancel     context.CancelFunc
}

func newTLSChain(t *testing.T, network, addr string) *tlsChain {
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
	backend := tls.Server(backendTCP, srv.Config())
	layered := tls.Client(relayServer, cli.Config())
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

func (c *tlsChain) wait(t *testing.T) Result {
	t.Helper()
	return (&chain{result: c.result}).wait(t)
}

// TestJoinTLSHalfClose: through a TLS side, a FIN from the user reaches the backend as
// close_notify followed by a FIN, the backend's late answer still flows back, and its
// close_notify and FIN reach the user as a FIN; every byte both ways, over IPv4 and IPv6.
func TestJoinTLSHalfClose(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			c := newTLSChain(t, tc.network, tc.addr)
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
			go func() {
				_, err := c.backend.Write(down)
				if err == nil {
					err = c.backend.CloseWrite()
				}
				if err == nil {
					err = c.backendTCP.CloseWrite()
				}
				errc <- err
			}()
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
		t.Run(tc.name, func(t *testing.T) {
			c := newTLSChain(t, "tcp4", "127.0.0.1:0")
			if _, err := c.user.Write([]byte("partial upload")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			if n, err := io.ReadFull(c.backend, buf[:14]); err != nil || string(buf[:n]) != "partial upload" {
				t.Fatalf("backend read %q, %v", buf[:n], err)
			}
			tc.cut(c)
			if tc.name != "backend resets" {
				_, err := c.backend.Read(buf)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("backend saw %v, want a reset", err)
				}
			}
			if tc.name != "user resets" {
				_, err := c.user.Read(buf)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("user saw %v, want a reset", err)
				}
			}
			if r := c.wait(t); r.End != tc.end {
				t.Errorf("end %q, want %q", r.End, tc.end)
			}
		})
	}
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

// BenchmarkJoinTLS moves bytes from a plain side through Join into a TLS side (and so
// through one TLS encryption and one decryption, as a tunnel's two relays do between
// them), to show what the user-space copy costs per byte.
func BenchmarkJoinTLS(b *testing.B) {
	srv, err := tlslink.LoadServer("", filepath.Join(b.TempDir(), "key"))
	if err != nil {
		b.Fatal(err)
	}
	cli, _ := tlslink.NewPinned([]string{srv.Pin})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	user, _ := net.Dial("tcp", ln.Addr().String())
	relayClient := (<-accepted).(*net.TCPConn)
	relayServer, _ := net.Dial("tcp", ln.Addr().String())
	backendTCP := <-accepted
	backend := tls.Server(backendTCP, srv.Config())
	layered := tls.Client(relayServer, cli.Config())
	go func() { _ = backend.Handshake() }()
	if err := layered.Handshake(); err != nil {
		b.Fatal(err)
	}
	go Join(context.Background(), relayClient, layered, Options{HalfClose: true})
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	done := make(chan int64, 1)
	go func() { n, _ := io.Copy(io.Discard, backend); done <- n }()
	b.SetBytes(chunk)
	b.ResetTimer()
	for b.Loop() {
		if _, err := user.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = user.(*net.TCPConn).CloseWrite()
	<-done
}
