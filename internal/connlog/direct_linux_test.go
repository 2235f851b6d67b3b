package connlog

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// blockingPipe returns a pipe whose ends block, as a tool's stderr does (os.Pipe's are
// non-blocking), with the write end's buffer at size bytes.
func blockingPipe(t *testing.T, size int) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, size); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// returnsWithin fails the test unless f returns within d.
func returnsWithin(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// A pipe with room takes the line before Printf returns: no writer goroutine to wake.
func TestDirectWriteToPipeWithRoom(t *testing.T) {
	r, w := blockingPipe(t, 64<<10)
	l := New(w)
	l.Printf("hello %d", 1)
	n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("the line was not in the pipe when Printf returned")
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(buf), " hello 1\n") {
		t.Fatalf("pipe holds %q", buf)
	}
}

// A full pipe is never written to by the caller: Printf returns, and the line follows
// once the reader makes room.
func TestDirectWriteNeverBlocksOnFullPipe(t *testing.T) {
	r, w := blockingPipe(t, 4096)
	size, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte("x"), size)); err != nil { // exactly full
		t.Fatal(err)
	}
	l := New(w)
	returnsWithin(t, 5*time.Second, "Printf to a full pipe", func() { l.Printf("after the fill") })
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(r); got <- string(b) }()
	returnsWithin(t, 5*time.Second, "Drain", l.Drain)
	w.Close()
	b := <-got
	if len(b) < size || !strings.HasSuffix(b, " after the fill\n") {
		t.Fatalf("read %d bytes ending %q; want the fill, then the line", len(b), b[max(len(b)-40, 0):])
	}
}

// A socket whose peer does not read (journald stalled) never blocks the caller either.
func TestDirectWriteNeverBlocksOnFullSocket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer, w := os.NewFile(uintptr(fds[0]), "peer"), os.NewFile(uintptr(fds[1]), "w")
	t.Cleanup(func() { peer.Close(); w.Close() })
	l := New(w)
	line := strings.Repeat("y", 1000)
	returnsWithin(t, 10*time.Second, "10,000 lines to a socket nobody reads", func() {
		for range 10000 { // about 10 MB: far more than a socket buffer
			l.Printf("%s", line)
		}
	})
}
