package relay

import (
	"bytes"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// trickleConn writes one byte per write(2) (the connection has no delay, so each is a
// segment of its own); once armed, it stops after stallAt more bytes until gate is closed,
// telling stalled.
type trickleConn struct {
	net.Conn
	mu      sync.Mutex
	armed   bool
	stallAt int
	stalled chan struct{}
	gate    chan struct{}
}

func (c *trickleConn) Write(p []byte) (int, error) {
	for i := range p {
		c.mu.Lock()
		if c.armed {
			if c.stallAt == 0 {
				c.armed = false
				c.mu.Unlock()
				close(c.stalled)
				<-c.gate
				c.mu.Lock()
			} else {
				c.stallAt--
			}
		}
		c.mu.Unlock()
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// TestWireRecordsByteByByte: a TLS peer that sends its records one byte per segment, and
// stops in the middle of one. Join over a Wire must deliver every byte (SHA-256), not
// spin while the record is incomplete (the process's CPU over the stall stays far below
// the stall's length), and pass the peer's close_notify and FIN on as a FIN, over IPv4
// and IPv6.
func TestWireRecordsByteByByte(t *testing.T) {
	for _, nw := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(nw.network, func(t *testing.T) {
			var tc *trickleConn
			c := newTLSChainOver(t, nw.network, nw.addr, true, func(c net.Conn) net.Conn {
				tc = &trickleConn{Conn: c, stalled: make(chan struct{}), gate: make(chan struct{})}
				return tc
			})
			down := randomBytes(t, 20000)
			tc.mu.Lock()
			tc.armed, tc.stallAt = true, 5000+7 // in the middle of the first record (a header and 5000 bytes)
			tc.mu.Unlock()
			errc := make(chan error, 1)
			go c.backendSends(down, errc)
			select {
			case <-tc.stalled:
			case <-time.After(20 * time.Second):
				t.Fatal("the backend never reached the stall")
			}
			// A measured window, not a wait for something: the relay has a partial record
			// and nothing to do.
			const window = 300 * time.Millisecond
			before := cpuTime()
			time.Sleep(window)
			spent := cpuTime() - before
			close(tc.gate)
			if spent > window/2 {
				t.Errorf("the process spent %v of CPU in %v while a TLS record was incomplete: a busy wait", spent, window)
			}
			n, sum, err := readAll(c.user)
			if err != nil || n != len(down) || sum != sha256Of(down) {
				t.Fatalf("user read %d bytes, want %d (sum ok %v), %v", n, len(down), sum == sha256Of(down), err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			// The user's half-close still reaches the backend, and the relay ends.
			if err := c.user.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(c.backend); err != nil || len(got) != 0 {
				t.Fatalf("backend read %d bytes, %v; want a clean end", len(got), err)
			}
			if r := c.wait(t); r.Down != int64(len(down)) || r.End != EndServerClosed {
				t.Errorf("result %+v", r)
			}
		})
	}
}

// TestWire64MiBBothWays: 64 MiB through Join over a Wire, 32 MiB each way at once,
// checked by SHA-256, with half-closes both ways, over IPv4 (and 4 MiB each way over IPv6).
func TestWire64MiBBothWays(t *testing.T) {
	for _, nw := range []struct {
		network, addr string
		size          int
	}{{"tcp4", "127.0.0.1:0", 32 << 20}, {"tcp6", "[::1]:0", 4 << 20}} {
		t.Run(nw.network, func(t *testing.T) {
			c := newTLSChain(t, nw.network, nw.addr, true)
			up, down := randomBytes(t, nw.size), randomBytes(t, nw.size+1)
			errs := make(chan error, 3)
			go sendAndHash(c.user, up, errs)
			go c.backendSends(down, errs)
			go func() {
				got, err := io.ReadAll(c.backend)
				if err == nil && !bytes.Equal(got, up) {
					err = io.ErrUnexpectedEOF
				}
				errs <- err
			}()
			n, sum, err := readAll(c.user)
			if err != nil || n != len(down) || sum != sha256Of(down) {
				t.Fatalf("user read %d bytes, want %d (sum ok %v), %v", n, len(down), sum == sha256Of(down), err)
			}
			for range 3 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if r := c.wait(t); r.Up != int64(len(up)) || r.Down != int64(len(down)) {
				t.Errorf("result %+v", r)
			}
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendSends writes data on the chain's backend, then close_notify and a FIN, and
// reports how that went on errc.
func (c *tlsChain) backendSends(data []byte, errc chan<- error) {
	_, err := c.backend.Write(data)
	if err == nil {
		err = c.backend.CloseWrite()
	}
	if err == nil {
		err = c.backendTCP.CloseWrite()
	}
	errc <- err
}
