package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
)

// moverEnds returns a mover's two sockets on loopback (network tcp4 or tcp6) and the
// connections the test talks through: it writes to in, the mover reads src and writes
// dst, and the test reads out.
func moverEnds(t *testing.T, network, addr string) (in *net.TCPConn, src, dst int, out *net.TCPConn) {
	srcConn, in := pair(t, network, addr)
	dstConn, out := pair(t, network, addr)
	return in, sysFD(t, srcConn), sysFD(t, dstConn), out
}

// step runs one step of m as the pump does: what it holds first, then a fill. It reports
// whether src ended.
func step(t *testing.T, m *mover, src, dst int, buf []byte) (eof bool) {
	t.Helper()
	if m.pending() > 0 {
		if _, err := m.drain(dst); err != nil && !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("drain: %v", err)
		}
		return false
	}
	n, _, err := m.fill(src, dst, buf, 1<<20)
	switch {
	case errors.Is(err, unix.EAGAIN):
		fds := []unix.PollFd{{Fd: int32(src), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, 100)
	case err != nil:
		t.Fatalf("fill: %v", err)
	case n == 0:
		return true
	}
	return false
}

// moveAll runs m from src to dst until src's end and everything is out.
func moveAll(t *testing.T, m *mover, src, dst int, buf []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !step(t, m, src, dst, buf) || m.pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the mover did not finish in 30 s")
		}
	}
}

// Small messages go through the loop's buffer with recv and send: no pipe is taken and
// nothing is spliced; every message arrives, in order.
func TestMoverSmallMessagesCopy(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			in, src, dst, out := moverEnds(t, tc.network, tc.addr)
			var m mover
			buf := make([]byte, eventloop.ScratchSize)
			msg := make([]byte, 100)
			got := make([]byte, len(msg))
			for i := range 50 {
				for j := range msg {
					msg[j] = byte(i + j)
				}
				if _, err := in.Write(msg); err != nil {
					t.Fatal(err)
				}
				for m.pending() > 0 || !arrived(t, out, got) {
					step(t, &m, src, dst, buf)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("message %d: got %x, want %x", i, got[:8], msg[:8])
				}
				if m.sp.p != nil || m.bulk {
					t.Fatalf("message %d: a small message took a pipe or switched to splice", i)
				}
			}
			if m.spliced != 0 {
				t.Fatalf("%d bytes spliced for small messages", m.spliced)
			}
		})
	}
}

// arrived reads from out for a moment and reports whether got is filled.
func arrived(t *testing.T, out *net.TCPConn, got []byte) bool {
	t.Helper()
	_ = out.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := io.ReadFull(out, got)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// A bulk stream moves by splice once a read has filled the buffer: all but a few reads'
// worth never enters user space, and the stream arrives whole (length and SHA-256). A small
// message after it goes through the buffer again.
func TestMoverBulkSplices(t *testing.T) {
	in, src, dst, out := moverEnds(t, "tcp6", "[::1]:0")
	const n = 64 << 20
	data := randomBytes(t, n)
	errc := make(chan error, 1)
	go func() { _, err := in.Write(data); errc <- err }()
	type digest struct {
		n   int
		sum [32]byte
		err error
	}
	got := make(chan digest, 1)
	go func() {
		h := sha256.New()
		k, err := io.CopyN(h, out, n)
		var d digest
		d.n, d.err = int(k), err
		copy(d.sum[:], h.Sum(nil))
		got <- d
	}()
	var m mover
	buf := make([]byte, eventloop.ScratchSize)
	deadline := time.Now().Add(30 * time.Second)
	moved := 0
	for moved < n {
		if time.Now().After(deadline) {
			t.Fatalf("moved %d of %d bytes in 30 s", moved, n)
		}
		if m.pending() > 0 {
			k, err := m.drain(dst)
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				t.Fatal(err)
			}
			moved += k
			continue
		}
		_, w, err := m.fill(src, dst, buf, 1<<20)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			t.Fatal(err)
		}
		moved += w
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	d := <-got
	if d.err != nil || d.n != n || d.sum != sha256.Sum256(data) {
		t.Fatalf("got %d bytes (%v), want %d with the same SHA-256", d.n, d.err, n)
	}
	if copied := n - m.spliced; copied > n/64 {
		t.Fatalf("%d of %d bytes went through user space; want at most %d", copied, n, n/64)
	}
	t.Logf("%d bytes spliced, %d copied", m.spliced, n-m.spliced)

	// Small messages after the stream: spliced copyBack times, then back to recv and send.
	spliced := m.spliced
	msg := []byte("small again")
	if _, err := in.Write(msg); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, len(msg))
	for m.pending() > 0 || !arrived(t, out, reply) {
		step(t, &m, src, dst, buf)
	}
	for range copyBack { // copyBack short splices in a row turned the mover back
		if _, err := in.Write(msg); err != nil {
			t.Fatal(err)
		}
		for m.pending() > 0 || !arrived(t, out, reply) {
			step(t, &m, src, dst, buf)
		}
	}
	if !bytes.Equal(reply, msg) || m.bulk || m.spliced > spliced+copyBack*int64(len(msg)) {
		t.Fatalf("after the stream: got %q, bulk %v, spliced %d more bytes", reply, m.bulk, m.spliced-spliced)
	}
}

// What the destination does not take is kept, in a pipe, or in a copy of its own when no
// pipe can be had; it goes out first once the destination takes more, and nothing is lost
// or reordered.
func TestMoverKeepsWhatDestinationRefuses(t *testing.T) {
	for _, noPipes := range []bool{false, true} {
		name := "pipe"
		if noPipes {
			name = "no-pipes"
		}
		t.Run(name, func(t *testing.T) {
			in, src, dst, out := moverEnds(t, "tcp4", "127.0.0.1:0")
			// Fill the destination: out does not read yet.
			_ = unix.SetsockoptInt(dst, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
			junk := make([]byte, 64<<10)
			filled := 0
			for {
				k, err := unix.Write(dst, junk)
				if errors.Is(err, unix.EAGAIN) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				filled += k
			}
			m := mover{noPipes: noPipes}
			buf := make([]byte, eventloop.ScratchSize)
			msg := randomBytes(t, 3000)
			if _, err := in.Write(msg); err != nil {
				t.Fatal(err)
			}
			waitReadable(t, src)
			n, w, err := m.fill(src, dst, buf, 1<<20)
			if err != nil || n != len(msg) || w != 0 {
				t.Fatalf("fill into a full destination: read %d, wrote %d, %v; want %d, 0", n, w, err, len(msg))
			}
			if m.pending() != len(msg) {
				t.Fatalf("pending %d, want %d", m.pending(), len(msg))
			}
			if noPipes != (m.held != nil) || noPipes != (m.sp.p == nil) {
				t.Fatalf("kept in held %v, in a pipe %v; want the pipe unless there is none", m.held != nil, m.sp.p != nil)
			}
			clear(buf) // the loop's buffer is free again: the next callback may scribble on it
			if _, err := in.Write(msg[:10]); err != nil {
				t.Fatal(err)
			}
			if err := in.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			res := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(out); res <- b }()
			moveAll(t, &m, src, dst, buf)
			_ = unix.Shutdown(dst, unix.SHUT_WR)
			b := <-res
			want := append(append(make([]byte, filled), msg...), msg[:10]...)
			if !bytes.Equal(b, want) {
				t.Fatalf("got %d bytes, want %d in order", len(b), len(want))
			}
			if m.sp.p != nil || m.held != nil {
				t.Fatal("the mover holds a pipe or a buffer after everything went out")
			}
		})
	}
}

// moveN runs m from src to dst until n more bytes have gone out to dst.
func moveN(t *testing.T, m *mover, src, dst int, buf []byte, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still to move after 30 s", n)
		}
		if m.pending() > 0 {
			k, err := m.drain(dst)
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("drain: %v", err)
			}
			n -= k
			continue
		}
		_, w, err := m.fill(src, dst, buf, 1<<20)
		switch {
		case errors.Is(err, unix.EAGAIN):
			waitReadable(t, src)
		case err != nil:
			t.Fatalf("fill: %v", err)
		}
		n -= w
	}
}

// A direction that moves bulk stays on splice through a short splice (a sender that paused,
// a window that just opened): only copyBack short splices in a row take it back to recv
// and send. Flipping at the first short one sent the next 16 KiB of every such stream
// through user space. The stream arrives whole (length and SHA-256).
func TestMoverStaysBulkThroughShortSplices(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			in, src, dst, out := moverEnds(t, tc.network, tc.addr)
			got := make(chan [32]byte, 1)
			count := make(chan int64, 1)
			go func() {
				h := sha256.New()
				k, _ := io.Copy(h, out)
				count <- k
				got <- [32]byte(h.Sum(nil))
			}()
			all := sha256.New()
			// send writes b to the mover's source; a big b from another goroutine while
			// the mover runs (the write blocks until it has moved most of it).
			werr := make(chan error, 1)
			send := func(b []byte, big bool) {
				all.Write(b)
				if big {
					go func() { _, err := in.Write(b); werr <- err }()
					return
				}
				if _, err := in.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			wrote := func() {
				if err := <-werr; err != nil {
					t.Fatal(err)
				}
			}
			var m mover
			buf := make([]byte, eventloop.ScratchSize)
			total := 0

			// A read that fills the buffer: the direction moves bulk.
			first := randomBytes(t, 64<<10)
			send(first, true)
			moveN(t, &m, src, dst, buf, len(first))
			wrote()
			total += len(first)
			if !m.bulk {
				t.Fatal("64 KiB did not make the direction bulk")
			}

			// One short splice, then bulk again: all of it spliced.
			msg := randomBytes(t, 1000)
			send(msg, false)
			waitReadable(t, src)
			moveN(t, &m, src, dst, buf, len(msg))
			total += len(msg)
			if !m.bulk {
				t.Fatal("one short splice took a bulk direction back to recv and send")
			}
			spliced := m.spliced
			more := randomBytes(t, 1<<20)
			send(more, true)
			moveN(t, &m, src, dst, buf, len(more))
			wrote()
			total += len(more)
			if d := m.spliced - spliced; d != int64(len(more)) {
				t.Fatalf("after one short splice, %d of %d bytes were spliced; want all", d, len(more))
			}

			// copyBack short splices in a row: small messages again, through the buffer.
			for range copyBack {
				send(msg[:100], false)
				waitReadable(t, src)
				moveN(t, &m, src, dst, buf, 100)
				total += 100
			}
			if m.bulk {
				t.Fatalf("%d short splices in a row left the direction on splice", copyBack)
			}
			spliced = m.spliced
			send(msg[:100], false)
			waitReadable(t, src)
			moveN(t, &m, src, dst, buf, 100)
			total += 100
			if m.spliced != spliced || m.sp.p != nil {
				t.Fatal("a small message after the short splices was spliced")
			}

			_ = unix.Shutdown(dst, unix.SHUT_WR)
			if k := <-count; k != int64(total) {
				t.Fatalf("got %d bytes, want %d", k, total)
			}
			if sum := <-got; sum != [32]byte(all.Sum(nil)) {
				t.Fatal("the stream arrived with a different SHA-256")
			}
		})
	}
}
