package testkit

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// NeedStrace skips the test unless strace can trace a process here.
func NeedStrace(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace is not installed")
	}
	if out, err := exec.Command("strace", "-o", os.DevNull, "true").CombinedOutput(); err != nil {
		t.Skipf("strace cannot trace here: %v: %s", err, out)
	}
}

// UserSpaceCalls are the system calls that move bytes through a user-space buffer.
var UserSpaceCalls = []string{"read", "write", "readv", "writev", "pread64", "pwrite64", "recvfrom", "sendto", "recvmsg", "sendmsg"}

// TraceBytes sums, per system call, the byte counts that the traced calls in an strace -f
// output file returned.
func TraceBytes(t testing.TB, path string) map[string]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	call := regexp.MustCompile(`^\d+\s+(?:<\.\.\. (\w+) resumed>|(\w+)\().*\)\s+=\s+(\d+)$`)
	sums := map[string]int64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := call.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.ParseInt(m[3], 10, 64)
			sums[m[1]+m[2]] += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sums
}

// UserSpaceBytes returns the bytes that sums (TraceBytes) counts for UserSpaceCalls.
func UserSpaceBytes(sums map[string]int64) (n int64) {
	for _, c := range UserSpaceCalls {
		n += sums[c]
	}
	return n
}

// DevNullSink returns a Backend handler that moves everything a connection sends into
// /dev/null with splice (os.File.ReadFrom of a TCP connection), reading nothing into user
// space itself, and sends the count on got (-1 when /dev/null cannot be opened).
func DevNullSink(t testing.TB, got chan<- int64) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			got <- -1
			return
		}
		defer null.Close()
		n, err := null.ReadFrom(c)
		if err != nil {
			t.Error(err)
		}
		got <- n
	}
}
