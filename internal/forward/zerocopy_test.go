package forward

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// rchar returns the bytes this process has read with read-like system calls
// (/proc/self/io). splice moves bytes without counting them there.
func rchar(t testing.TB) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no rchar in /proc/self/io")
	return 0
}

// pushThrough writes n bytes through the forwarder at addr from a user-space buffer (which
// counts as written, not read) and returns what the sink got.
func pushThrough(t testing.TB, addr string, n int64, got <-chan int64) int64 {
	t.Helper()
	c := testkit.Dial(t, addr)
	buf := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(buf)) {
		if _, err := c.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.CloseWrite()
	select {
	case m := <-got:
		return m
	case <-time.After(60 * time.Second):
		t.Fatal("the sink did not finish within 60s")
		return 0
	}
}

// The relay never copies bulk through user space: 256 MiB through the forwarder, in its
// plain, rate-limited and host-file (metered) modes, add almost nothing to the bytes this
// process read with read(2) (a user-space copy with read would add all 256 MiB), and all
// but at most 1/64 of them moved by splice, by the relay's own count (recv, which the loop
// uses for small messages, does not show in rchar).
func TestZeroCopy(t *testing.T) {
	const n = 256 << 20
	got := make(chan int64, 1)
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.DevNullSink(t, got))
	hosts := writeFile(t, be.Addr()+" 0\n")
	modes := []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{Dest: dest(t, be.Addr())}},
		{"rate", Config{Dest: dest(t, be.Addr()), Rate: 8 << 30}},
		{"hostfile", Config{HostFile: hosts, Port: 9}},
		{"lazy-idle", Config{Dest: dest(t, be.Addr()), Lazy: true, IdleTimeout: time.Minute}},
	}
	var mu sync.Mutex // the modes run one at a time: rchar is the whole process's
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			mu.Lock()
			defer mu.Unlock()
			pf := startServer(t, "127.0.0.1:0", m.cfg)
			before := rchar(t)
			start := time.Now()
			moved := pushThrough(t, pf.addr, n, got)
			read := rchar(t) - before
			t.Logf("%s: %d bytes in %v, %d bytes read into user space", m.name, moved, time.Since(start), read)
			if moved != n {
				t.Fatalf("the sink got %d bytes, want %d", moved, n)
			}
			if read > n/64 {
				t.Errorf("%d bytes read into user space for %d relayed: the relay copies instead of splicing", read, n)
			}
			pf.log.WaitFor(t, fmt.Sprintf(`close #1 .* up=%d `, n), 1, 5*time.Second)
			// The close line comes after the connection's count was added.
			if spliced := pf.spliced.Load(); spliced < n-n/64 || spliced > n {
				t.Errorf("%d of %d bytes moved by splice: the relay copies instead of splicing", spliced, n)
			}
		})
	}
	// The control: a copy through a user-space buffer shows up in full, so the measure
	// above can tell the two apart.
	t.Run("control-userspace", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		ln := testkit.Listen(t, "127.0.0.1:0")
		go func() {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			defer c.Close()
			s, err := net.Dial("tcp", be.Addr())
			if err != nil {
				return
			}
			defer s.Close()
			// The wrappers hide the sockets from io.Copy, as any wrapper would.
			_, _ = io.Copy(struct{ io.Writer }{s}, struct{ io.Reader }{c})
		}()
		before := rchar(t)
		moved := pushThrough(t, ln.Addr().String(), n, got)
		read := rchar(t) - before
		if moved != n || read < n {
			t.Errorf("user-space copy: sink got %d, %d bytes read into user space; want %d and at least as many", moved, read, n)
		}
	})
}
