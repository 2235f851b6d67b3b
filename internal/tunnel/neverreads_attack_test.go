package tunnel

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tlslink"
)

// countWriter counts what went through to w.
type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestAttackRelayNeverReads: a relay that takes a link through its handshake, then
// sends a client's 48 MiB (40 MiB on a TLS link) to an echo service on it and never
// reads the link: the echo has nowhere to go, the relay's receive window fills, and the
// agent must pass that back (it stops reading the service, which stops reading its
// client) rather than buffer: the relay's writes stall short of the whole, the agent's
// heap stays within a few MiB, and the link is not cut. Then the relay reads: every byte
// comes back, by length and SHA-256, and the service got them all; no byte was lost on
// the way, silently or not.
func TestAttackRelayNeverReads(t *testing.T) { neverReads(t, "127.0.0.1", false, 48<<20) }

// TestAttackTLSRelayNeverReads: the same on a TLS link (--tls-pin), over IPv6 loopback:
// relay.Join copies in steps of its buffers, and holds no more.
func TestAttackTLSRelayNeverReads(t *testing.T) { neverReads(t, "::1", true, 40<<20) }

func neverReads(t *testing.T, host string, useTLS bool, size int64) {
	var srv *tlslink.Server
	if useTLS {
		srv = newTLSServer(t)
	}
	svc := startService(t, host, echoMode)
	var written atomic.Int64
	readNow := make(chan struct{})
	type result struct {
		got  testkit.Digest
		err  error
		werr error
	}
	done := make(chan result, 1)
	var once atomic.Bool
	ln, _ := linkPort(t, host, func(c *net.TCPConn) {
		rw, err := shakeAsRelay(c, srv, time.Second)
		if err != nil || !once.CompareAndSwap(false, true) {
			_, _ = io.Copy(io.Discard, c) // the pool's next link: idle
			return
		}
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		// Small buffers on the relay's side: what stalls is then the agent's.
		_ = c.SetReadBuffer(64 << 10)
		_ = c.SetWriteBuffer(64 << 10)
		var w io.Writer = c
		var r io.Reader = c
		closeWrite := c.CloseWrite
		if tcn, ok := rw.(*tls.Conn); ok {
			s := newFramedLink(c, tcn, nil).session(context.Background())
			w, r, closeWrite = s, s, s.CloseWrite
		}
		werr := make(chan error, 1)
		go func() {
			_, err := testkit.Send(countWriter{w, &written}, 7, size)
			if err == nil {
				err = closeWrite()
			}
			werr <- err
		}()
		<-readNow
		got, err := testkit.Receive(io.LimitReader(r, size))
		done <- result{got, err, <-werr}
	})
	tn := &tunnel{}
	ac := AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 1, HandshakeTimeout: time.Second}
	if srv != nil {
		ac.TLS = pinned(t, srv.Pin)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	startAgent(t, ac, tn)
	// The relay writes until the window it does not read, and every buffer
	// behind it (the kernel's, up to tcp_rmem's and tcp_wmem's), are full: then
	// nothing moves for 200 ms.
	start := time.Now()
	last, still := int64(-1), time.Now()
	for time.Since(still) < 200*time.Millisecond {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the relay's writes never stalled: %d of %d bytes written in 5s", written.Load(), size)
		}
		if n := written.Load(); n != last {
			last, still = n, time.Now()
		}
		time.Sleep(10 * time.Millisecond) // a poll, with a deadline
	}
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	grew := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("the relay's writes stalled at %d of %d bytes after %v; heap in use grew by %d KiB", last, size, time.Since(start).Round(time.Millisecond), grew>>10)
	// Whether the writes stall before the end depends on how far the kernel grows the
	// buffers of the path's eight sockets (CI of bf03540: all 48 MiB went in); what the
	// agent holds is its heap, bounded below.
	if last >= size {
		t.Logf("the kernel's buffers on the path took all %d bytes", size)
	}
	if grew > 16<<20 {
		t.Errorf("heap in use grew by %d MiB while the relay did not read", grew>>20)
	}
	close(readNow)
	select {
	case res := <-done:
		if want := testkit.Expected(7, size); res.err != nil || res.got != want {
			t.Errorf("the relay read back %v (%v), want %v", res.got, res.err, want)
		}
		if res.werr != nil {
			t.Errorf("the relay's writes: %v", res.werr)
		}
	case <-time.After(testTimeout):
		t.Fatalf("the echo did not come back within %v once the relay read", testTimeout)
	}
}
