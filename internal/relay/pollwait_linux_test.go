package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/sock"
	"shd-tcp-tools/internal/testkit"
)

// TestWriteStreamPacedReader: writeStream writes every byte to a peer that reads in small
// steps with pauses shorter and longer than its wait in poll(2), so that it finds the
// socket full both ways, and the peer gets the stream whole (length and SHA-256).
func TestWriteStreamPacedReader(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		a, b := pair(t, "tcp", addr)
		if err := a.SetWriteBuffer(64 << 10); err != nil {
			t.Fatal(err)
		}
		const n = 8 << 20
		msg := make([]byte, n)
		if _, err := io.ReadFull(testkit.NewStream(7), msg); err != nil {
			t.Fatal(err)
		}
		got := make(chan testkit.Digest, 1)
		go func() {
			d := testkit.NewDigester()
			buf := make([]byte, 32<<10)
			for i := 0; ; i++ {
				if i%8 == 0 {
					time.Sleep(time.Duration(i%3) * time.Millisecond) // 0, 1 or 2 ms: the pacing under test
				}
				m, err := b.Read(buf)
				_, _ = d.Write(buf[:m])
				if err != nil {
					break
				}
			}
			got <- d.Digest()
		}()
		w, err := writeStream(a, msg)
		if err != nil || w != n {
			t.Fatalf("%s: writeStream wrote %d of %d bytes: %v", addr, w, n, err)
		}
		_ = a.CloseWrite()
		if d, want := <-got, testkit.Expected(7, n); d != want {
			t.Fatalf("%s: the peer got %v, want %v", addr, d, want)
		}
	}
}

// TestWriteStreamErrors: writeStream ends as c.Write does: a write deadline in the past
// while it waits for room (the peer never reads) ends it with a timeout after part of the
// bytes, and a peer's reset with a reset, both worded as c.Write words them.
func TestWriteStreamErrors(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		a, b := pair(t, "tcp", addr)
		big := make([]byte, 32<<20) // more than the socket and its peer hold: the peer never reads
		done := make(chan error, 1)
		var wrote int
		go func() {
			var err error
			wrote, err = writeStream(a, big)
			done <- err
		}()
		testkit.WaitUntil(t, 5*time.Second, "bytes in the socket", func() bool {
			q := -1
			control(a, func(fd int) { q = sock.Unacked(fd) })
			return q > 0
		})
		start := time.Now()
		if err := a.SetWriteDeadline(time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: writeStream did not end within 5 s of a deadline in the past", addr)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || wrote <= 0 || wrote >= len(big) {
			t.Fatalf("%s: writeStream ended with %d bytes written, %v; want part of it and a timeout", addr, wrote, err)
		}
		_, want := a.Write(big[:1])
		if err.Error() != want.Error() {
			t.Errorf("%s: writeStream said %q, c.Write says %q", addr, err, want)
		}
		t.Logf("%s: ended %v after the deadline was set", addr, time.Since(start))

		// A reset from the peer while writeStream waits for room.
		_ = a.SetWriteDeadline(time.Time{})
		go func() {
			var err error
			wrote, err = writeStream(a, big)
			done <- err
		}()
		_ = b.SetLinger(0)
		_ = b.Close()
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: writeStream did not end within 5 s of the peer's reset", addr)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("%s: writeStream ended with %v after the peer's reset", addr, err)
		}
		if !strings.HasPrefix(err.Error(), "write tcp ") {
			t.Errorf("%s: writeStream said %q, want it worded as c.Write words it", addr, err)
		}
	}
}

// TestPollWait: pollWait reports a socket ready at once, and one that stays silent not
// ready after its wait.
func TestPollWait(t *testing.T) {
	a, b := pair(t, "tcp", "127.0.0.1:0")
	fdOf := func(c *net.TCPConn) (fd int) {
		control(c, func(f int) { fd = f })
		return fd
	}
	start := time.Now()
	if pollWait(fdOf(a), pollIn, 5) {
		t.Fatal("pollWait says a silent socket is readable")
	}
	if d := time.Since(start); d < 4*time.Millisecond {
		t.Fatalf("pollWait gave up after %v, want its 5 ms", d)
	}
	if !pollWait(fdOf(a), pollOut, 5) {
		t.Fatal("pollWait says an empty socket is not writable")
	}
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if !pollWait(fdOf(a), pollIn, 5000) {
		t.Fatal("pollWait says a socket with a byte queued is not readable")
	}
}
