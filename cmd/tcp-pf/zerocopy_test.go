package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestZeroCopyBinary sends 1 GiB through the tcp-pf binary, under strace, to a backend
// that splices it into /dev/null, and checks from the system calls' own counts that tcp-pf
// spliced it: the adaptive copy step takes small messages through user space, and a bulk
// stream only its first read.
func TestZeroCopyBinary(t *testing.T) {
	t.Parallel()
	testkit.NeedStrace(t)
	const size = 1 << 30
	got := make(chan int64, 1)
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.DevNullSink(t, got))
	trace := filepath.Join(t.TempDir(), "trace")
	pf := startPF(t, "127.0.0.1", "exec strace -f -qq -o "+trace+" -e trace=splice,"+joinCalls()+" ", "-d", be.Addr())
	// The process started is strace; tcp-pf is its child, and must be stopped itself: a
	// killed strace leaves it running.
	child := tracee(t, pf.Pid())
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) }) // by pid; it is ours
	c := testkit.Dial(t, pf.addr)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.CloseWrite()
	select {
	case n := <-got:
		if n != size {
			t.Fatalf("the backend got %d bytes, want %d", n, size)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the backend did not get the stream within 2 minutes")
	}
	// strace writes a line per call as it returns; the last calls may still be on their
	// way into the file. Every byte is read once and written once, either way.
	var sums map[string]int64
	testkit.WaitUntil(t, 10*time.Second, "the trace shows the whole stream", func() bool {
		sums = testkit.TraceBytes(t, trace)
		return sums["splice"]+testkit.UserSpaceBytes(sums) >= 2*size
	})
	user := testkit.UserSpaceBytes(sums)
	t.Logf("tcp-pf: splice %d bytes (in and out of its pipes), user space %d", sums["splice"], user)
	if user > size/64 {
		t.Errorf("%d bytes went through user space for a %d-byte stream; want at most %d", user, size, size/64)
	}
	if err := syscall.Kill(child, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, _ := pf.Exit(t, 10*time.Second); code != 0 {
		t.Errorf("tcp-pf under strace exited %d after SIGTERM", code)
	}
}

// tracee returns the pid of the one child of the strace process pid.
func tracee(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("strace (pid %d) has children %q, want one", pid, f)
	}
	child, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// joinCalls returns testkit.UserSpaceCalls for strace's -e trace=.
func joinCalls() string { return strings.Join(testkit.UserSpaceCalls, ",") }
