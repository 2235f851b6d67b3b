//go:build linux

package relay

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sysFD returns c's descriptor, which stays open (and non-blocking) as long as c does.
func sysFD(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// waitReadable waits up to 5 s for fd to have input (or its end).
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 && !errors.Is(err, unix.EINTR) {
		t.Fatalf("socket not readable within 5s: %v", err)
	}
}

// A Splicer moves bytes from one socket to another in steps, holds a pipe only while bytes
// are in it, reports an empty source with EAGAIN and the source's end with 0.
func TestSplicer(t *testing.T) {
	srcPeer, src := pair(t, "tcp", "127.0.0.1:0") // we write to srcPeer, splice from src
	dst, dstPeer := pair(t, "tcp", "127.0.0.1:0") // we splice into dst, read from dstPeer
	srcFD, dstFD := sysFD(t, src), sysFD(t, dst)

	var sp Splicer
	if _, err := sp.Fill(srcFD, 1<<20); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("Fill on an empty socket: %v, want EAGAIN", err)
	}
	if sp.p != nil || sp.Pending() != 0 {
		t.Fatal("an empty Fill kept a pipe")
	}

	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(rand.N(256))
	}
	go func() { _, _ = srcPeer.Write(want); _ = srcPeer.CloseWrite() }()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(dstPeer); got <- b }()

	moved, eof := 0, false
	deadline := time.Now().Add(10 * time.Second)
	for !eof && time.Now().Before(deadline) {
		n, err := sp.Fill(srcFD, 64<<10)
		switch {
		case errors.Is(err, unix.EAGAIN):
			waitReadable(t, srcFD)
			continue
		case err != nil:
			t.Fatal(err)
		case n == 0:
			eof = true
		}
		if sp.Pending() != n {
			t.Fatalf("Pending %d after a Fill of %d", sp.Pending(), n)
		}
		for sp.Pending() > 0 {
			m, err := sp.Drain(dstFD)
			if errors.Is(err, unix.EAGAIN) {
				continue // the reader goroutine makes room
			}
			if err != nil {
				t.Fatal(err)
			}
			moved += m
		}
		if sp.p != nil {
			t.Fatal("a drained Splicer kept its pipe")
		}
	}
	if !eof {
		t.Fatal("no EOF within 10s")
	}
	_ = dst.CloseWrite()
	if b := <-got; moved != len(want) || !bytes.Equal(b, want) {
		t.Fatalf("moved %d, received %d bytes (equal %v), sent %d", moved, len(b), bytes.Equal(b, want), len(want))
	}
	if sp.p != nil {
		t.Fatal("a Splicer whose source ended kept its pipe")
	}

	// Release with bytes still in the pipe drops them and the pipe with them.
	a, b := pair(t, "tcp", "127.0.0.1:0")
	if _, err := a.Write([]byte("left over")); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, sysFD(t, b))
	if n, err := sp.Fill(sysFD(t, b), 1<<20); err != nil || n != 9 {
		t.Fatalf("Fill: %d, %v", n, err)
	}
	sp.Release()
	if sp.p != nil || sp.Pending() != 0 {
		t.Fatal("Release kept a pipe or its bytes")
	}
}
