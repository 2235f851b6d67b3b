package relay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rcvLowat returns c's SO_RCVLOWAT.
func rcvLowat(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	v, err := unix.GetsockoptInt(sysFD(t, c), unix.SOL_SOCKET, unix.SO_RCVLOWAT)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWireMarkUpWhileStreaming: a read-ahead that finds a stream running ahead raises the
// socket's low-water mark above what is queued (the poller is not woken by every
// segment), a read-ahead that finds nothing puts it back to 1 before it waits, and so does
// release (an idle link is watched for readability, and its next session may start with a
// few bytes).
func TestWireMarkUpWhileStreaming(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		a, b := pair(t, "tcp", addr)
		if err := a.SetReadBuffer(1 << 20); err != nil { // room for more than a step
			t.Fatal(err)
		}
		w := NewWire(a)
		msg := bytes.Repeat([]byte("mark"), (bulkSize+bulkSize/2)/4)
		go func() { _, _ = b.Write(msg) }()
		// Wait until more than a step is queued, so that the read-ahead fills a step.
		deadline := time.Now().Add(10 * time.Second)
		for queued(t, a) <= bulkSize {
			if time.Now().After(deadline) {
				t.Fatalf("only %d bytes queued", queued(t, a))
			}
			time.Sleep(time.Millisecond)
		}
		if err := w.fill(); err != nil {
			t.Fatal(err)
		}
		if got := w.Buffered(); got != bulkSize {
			t.Fatalf("read ahead %d bytes, want %d", got, bulkSize)
		}
		if mark := rcvLowat(t, a); mark <= len(msg)-bulkSize {
			t.Errorf("%s: mark %d after a full read-ahead with %d bytes left queued, want more", addr, mark, len(msg)-bulkSize)
		}
		w.release()
		if mark := rcvLowat(t, a); mark > 1 {
			t.Errorf("%s: mark %d after release, want it down (1)", addr, mark)
		}
		// Up again, then down before a wait: the read-ahead that finds nothing lowers it.
		got := make([]byte, 0, len(msg))
		p := make([]byte, bulkSize)
		for len(got) < len(msg) {
			if err := w.fill(); err != nil {
				t.Fatal(err)
			}
			n, err := w.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p[:n]...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%s: read %d bytes, not the %d sent", addr, len(got), len(msg))
		}
		// The read-ahead finds a mark up from the last full read, then nothing queued: it
		// lowers the mark and waits.
		if mark := rcvLowat(t, a); mark <= 1 {
			t.Fatalf("%s: mark %d after the stream's reads, want it up", addr, mark)
		}
		done := make(chan error, 1)
		go func() { done <- w.fill() }()
		for rcvLowat(t, a) > 1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: a read-ahead that found nothing left the mark at %d", addr, rcvLowat(t, a))
			}
			time.Sleep(time.Millisecond)
		}
		if _, err := b.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: a read-ahead waiting for 1 byte after a stream did not see it (mark %d)", addr, rcvLowat(t, a))
		}
		if n, err := w.Read(p); n != 1 || err != nil {
			t.Fatalf("%s: %d, %v; want the 1 byte", addr, n, err)
		}
	}
}

// queued returns the bytes c has received and not read.
func queued(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	n, err := unix.IoctlGetInt(sysFD(t, c), unix.SIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestJoinTLSStreamThenPause: through a TLS side over a Wire, a stream that runs ahead of
// the copy (the marks go up) and then pauses still has its last few bytes relayed at once,
// both ways: the copy never waits with a mark above what will come.
func TestJoinTLSStreamThenPause(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			c := newTLSChain(t, tc.network, tc.addr, true)
			burst := randomBytes(t, 2<<20)
			for round := range 2 {
				tail := []byte(fmt.Sprintf("tail %d", round))
				streamThenTail(t, c.user, c.backend, burst, tail, fmt.Sprintf("round %d, to the backend", round))
				streamThenTail(t, c.backend, c.user, burst, tail, fmt.Sprintf("round %d, to the user", round))
			}
			_ = c.user.CloseWrite()
			_ = c.backend.CloseWrite()
			if r := c.wait(t); r.Up != int64(2*(len(burst)+6)) || r.Down != r.Up {
				t.Fatalf("relay moved %d up and %d down, want %d each", r.Up, r.Down, 2*(len(burst)+6))
			}
		})
	}
}

// streamThenTail writes burst to from, waits until to has read all of it, then writes tail
// and checks that to reads it too.
func streamThenTail(t *testing.T, from io.Writer, to io.Reader, burst, tail []byte, what string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := from.Write(burst)
		errc <- err
	}()
	got := make([]byte, len(burst)+len(tail))
	if _, err := io.ReadFull(to, got[:len(burst)]); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if _, err := from.Write(tail); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if _, err := io.ReadFull(to, got[len(burst):]); err != nil {
		t.Fatalf("%s: the tail after a pause did not arrive: %v", what, err)
	}
	if !bytes.Equal(got[:len(burst)], burst) || !bytes.Equal(got[len(burst):], tail) {
		t.Fatalf("%s: other bytes arrived", what)
	}
}
