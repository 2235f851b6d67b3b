package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// SIGHUP stops tcppipe as SIGTERM does: mid-transfer it writes the count of what went
// through to the host file and exits 1 saying how many bytes that was (not 129 with
// nothing written, as a hangup's default would).
func TestSIGHUPMidTransfer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in, data := randomFile(t, 4<<20) // 16 s at 256 KiB/s: still running when signalled
	p := start(t, testkit.Open(t, in), nil, "-l", "256K", "-n", hosts, "-", ".", strconv.Itoa(port))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got atomic.Int64
	received := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			b.Write(buf[:n])
			got.Add(int64(n))
			if err != nil {
				break
			}
		}
		received <- b.Bytes()
	}()
	testkit.WaitUntil(t, 10*time.Second, "100 KB received", func() bool { return got.Load() >= 100000 })
	n, _ := interrupt(t, p, syscall.SIGHUP, received, data)
	if f, _ := os.ReadFile(hosts); string(f) != fmt.Sprintf("127.0.0.1 %d\n", 10+n) {
		t.Errorf("hosts file %q, want the %d bytes added", f, n)
	}
}

// interrupt sends sig to p in the middle of sending data and checks what a cut-short
// transfer must give: exit 1, the bytes-through message last, and the receiver (which
// sends what it got on received) holding exactly that many bytes, the first of data. It
// returns that count and p's stderr.
func interrupt(t *testing.T, p *proc, sig syscall.Signal, received <-chan []byte, data []byte) (int, string) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	code, stderr := p.wait(t)
	m := cutShort.FindStringSubmatch(stderr)
	if code != 1 || m == nil || m[1] != "interrupted by signal" {
		t.Fatalf("exit %d after %v, stderr %q; want 1 and the bytes-through message last", code, sig, stderr)
	}
	n, _ := strconv.Atoi(m[2])
	got := <-received
	if len(got) != n || n >= len(data) {
		t.Errorf("the receiver got %d bytes; tcppipe says %d of %d went through", len(got), n, len(data))
	}
	testkit.CheckSame(t, "received", got, data[:len(got)])
	return n, stderr
}
