package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"shd-tcp-tools/internal/testkit"
)

// TestUsageErrorsTouchNothing runs usage errors under strace and checks the spec's "before
// any socket is opened or any file is changed": no TCP socket, no bind, no listen, no file
// opened for writing, created, renamed, truncated or removed. (A name in INADDR_DEFAULT is
// resolved, which may use UDP sockets to the resolver: those are allowed.)
func TestUsageErrorsTouchNothing(t *testing.T) {
	t.Parallel()
	testkit.NeedStrace(t)
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"--bogus", "-n", hosts, "-", ".", "9"},
		{"-n", hosts, "-"},
		{"-n", hosts, "-", ".", "9", "extra"},
		{"-n", hosts, ":9", ".", "9"},
		{"-b", hosts, ":0", "-"},
		{"-b", hosts, ":65536", "-"},
		{"-b", hosts, "-", "127.0.0.1", "99999"},
		{"-b", hosts, ":abc", "-"},
		{"-b", hosts, "-", ".", "9"},
		{"-l", "0", "-n", hosts, "-", ".", "9"},
		{"-l", "-5", "-n", hosts, "-", ".", "9"},
		{"-l", "1X", "-n", hosts, "-", ".", "9"},
		{"-l", "99999999999G", "-n", hosts, "-", ".", "9"},
		{"-i", "0", "-n", hosts, "-", ".", "9"},
		{"-i", "-2", "-n", hosts, "-", ".", "9"},
		{"-w", "-1", "-b", hosts, ":9", "-"},
		{"-w", "x", "-b", hosts, ":9", "-"},
		{"INADDR_DEFAULT=nothere.invalid", "-n", hosts, "-", ".", "9"},
		{"INADDR_DEFAULT=nothere.invalid", "-b", hosts, ":9", "-"},
	}
	bad := regexp.MustCompile(`socket\(AF_INET6?, SOCK_STREAM|\b(bind|listen|rename|renameat2?|unlink|unlinkat|truncate|ftruncate|creat)\(|openat\(.*O_(WRONLY|RDWR|CREAT|TRUNC)`)
	for i, args := range cases {
		trace := filepath.Join(dir, "trace"+strconv.Itoa(i))
		wrapper := []string{"strace", "-f", "-qq", "-o", trace, "-e",
			"trace=socket,connect,bind,listen,openat,creat,rename,renameat,renameat2,unlink,unlinkat,truncate,ftruncate"}
		env := "INADDR_DEFAULT="
		if strings.HasPrefix(args[0], "INADDR_DEFAULT=") {
			env, args = args[0], args[1:]
		}
		cmd := exec.Command(wrapper[0], append(append(wrapper[1:], binPath), args...)...)
		cmd.Env = append(os.Environ(), env, "GORACE="+goraceNoSleep())
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s tcppipe %q: %v, %q; want exit status 2", env, args, err, out)
			continue
		}
		if msg := checkStderr(string(out), 2); msg != "" {
			t.Errorf("%s tcppipe %q: %s: %q", env, args, msg, out)
		}
		f, err := os.Open(trace)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if bad.MatchString(sc.Text()) {
				t.Errorf("%s tcppipe %q, a usage error, did: %s", env, args, sc.Text())
			}
		}
		f.Close()
	}
	if b, _ := os.ReadFile(hosts); string(b) != "127.0.0.1 10\n" {
		t.Errorf("hosts changed: %q", b)
	}
	if _, err := os.Stat(hosts + ".lock"); err == nil {
		t.Error("a lock file was created")
	}
}

// TestZeroCopyStrace sends 64 MiB from a file through two tcppipe processes to /dev/null,
// both under strace, plain and with -l, and checks that the bytes went by sendfile (file
// to socket) and splice (socket to /dev/null), not by read and write through user space.
// /proc/self/io cannot show this for sendfile, which it counts like read plus write.
func TestZeroCopyStrace(t *testing.T) {
	t.Parallel()
	testkit.NeedStrace(t)
	const size = 64 << 20
	in, _ := randomFile(t, size)
	const calls = "trace=read,write,readv,writev,pread64,pwrite64,recvfrom,sendto,recvmsg,sendmsg,sendfile,splice,copy_file_range"
	for _, limit := range [][]string{nil, {"-l", "10G"}} {
		t.Run("limit="+strings.Join(limit, ""), func(t *testing.T) {
			dir := t.TempDir()
			recvTrace, sendTrace := filepath.Join(dir, "recv"), filepath.Join(dir, "send")
			devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer devnull.Close()
			recv, port := startListeningUnder(t, []string{"strace", "-f", "-qq", "-o", recvTrace, "-e", calls}, nil, devnull,
				func(p int) []string { return append(append([]string(nil), limit...), ":"+strconv.Itoa(p), "-") })
			send := startUnder(t, []string{"strace", "-f", "-qq", "-o", sendTrace, "-e", calls}, testkit.Open(t, in), nil,
				append(append([]string(nil), limit...), "-", "127.0.0.1", strconv.Itoa(port))...)
			if code, stderr := send.wait(t); code != 0 {
				t.Fatalf("sender: exit %d: %s", code, stderr)
			}
			if code, stderr := recv.wait(t); code != 0 {
				t.Fatalf("receiver: exit %d: %s", code, stderr)
			}
			user := testkit.UserSpaceBytes
			s, r := testkit.TraceBytes(t, sendTrace), testkit.TraceBytes(t, recvTrace)
			t.Logf("sender: sendfile %d, splice %d, user space %d; receiver: splice %d, user space %d",
				s["sendfile"], s["splice"], user(s), r["splice"], user(r))
			if s["sendfile"]+s["splice"]+s["copy_file_range"] < size || user(s) > size/64 {
				t.Errorf("sender moved %d bytes in the kernel and %d through user space; want all %d in the kernel", s["sendfile"]+s["splice"], user(s), size)
			}
			if r["splice"] < size || user(r) > size/64 {
				t.Errorf("receiver spliced %d bytes and moved %d through user space; want all %d spliced", r["splice"], user(r), size)
			}
		})
	}
}
