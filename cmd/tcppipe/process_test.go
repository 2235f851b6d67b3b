package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/pipe/pipetest"
	"shd-tcp-tools/internal/testkit"
)

// timeout bounds every wait on a process.
const timeout = 60 * time.Second

// proc is a running tcppipe, its stderr in Log.
type proc struct{ *testkit.Proc }

// start starts the built tcppipe with stdin and stdout (nil: /dev/null) and args. It is
// killed, by its pid, if it is still running when the test ends.
func start(t testing.TB, stdin, stdout *os.File, args ...string) *proc {
	t.Helper()
	return startUnder(t, nil, stdin, stdout, args...)
}

// startUnder is start with the binary run under a wrapper command (strace ... ), if any.
func startUnder(t testing.TB, wrapper []string, stdin, stdout *os.File, args ...string) *proc {
	t.Helper()
	argv := append(append(append([]string(nil), wrapper...), binPath), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "INADDR_DEFAULT=", "GORACE="+goraceNoSleep())
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	return &proc{testkit.StartCmd(t, cmd)}
}

// wait returns the exit status and stderr, failing the test if the process does not exit
// within timeout or its stderr is not what an exit with that status prints.
func (p *proc) wait(t testing.TB) (int, string) {
	t.Helper()
	code, _ := p.Exit(t, timeout)
	stderr := p.Log.String()
	if msg := checkStderr(stderr, code); msg != "" {
		t.Errorf("%v: %s: %q", p.Cmd.Args, msg, stderr)
	}
	return code, stderr
}

// listening reports whether a socket listens on port. Asking the kernel, rather than
// connecting, leaves tcppipe's single accept for the test.
func listening(t testing.TB, port int) bool {
	_, ok, err := pipetest.ListenQueue(port)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// startListening starts a tcppipe that listens on a port of its own, given to args, and
// returns once it listens. The port is picked below the kernel's ephemeral range and
// checked free; should another process take it first, the start is retried on another.
func startListening(t testing.TB, stdin, stdout *os.File, args func(port int) []string) (*proc, int) {
	t.Helper()
	return startListeningUnder(t, nil, stdin, stdout, args)
}

func startListeningUnder(t testing.TB, wrapper []string, stdin, stdout *os.File, args func(port int) []string) (*proc, int) {
	t.Helper()
	for range 5 {
		port := freePort(t)
		p := startUnder(t, wrapper, stdin, stdout, args(port)...)
		testkit.WaitUntil(t, timeout, fmt.Sprintf("tcppipe to listen on %d", port), func() bool { return listening(t, port) || p.Exited() })
		if !p.Exited() {
			return p, port
		}
		if _, stderr := p.wait(t); !strings.Contains(stderr, "address already in use") {
			t.Fatalf("tcppipe %v exited before listening: %s", args(port), stderr)
		}
		if stdin != nil {
			stdin.Seek(0, io.SeekStart)
		}
	}
	t.Fatal("no free port found in 5 tries")
	return nil, 0
}

// freePort returns a port in 20000-32767 that nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(12768)
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free port in 100 tries")
	return 0
}

// randomFile writes n pseudo-random bytes to a temporary file and returns its path.
func randomFile(t testing.TB, n int) (string, []byte) {
	t.Helper()
	data := testkit.RandomData(n)
	return testkit.WriteFile(t, "in", data), data
}

func checkOutFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	testkit.CheckSame(t, path, got, want)
}

func hasIPv6() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// TestPairs sends 32 MiB of random data from one tcppipe to another, with either one
// listening, over IPv4, IPv6 and a host name, through stdin and stdout redirected to files.
func TestPairs(t *testing.T) {
	t.Parallel()
	in, data := randomFile(t, 32<<20)
	hosts := []string{"127.0.0.1", "localhost"}
	if hasIPv6() {
		hosts = append(hosts, "::1")
	}
	for _, host := range hosts {
		t.Run(host+"/receiver-listens", func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			// tcppipe :PORT - > out;  tcppipe - HOST PORT < in
			recv, port := startListening(t, nil, testkit.Create(t, out), func(p int) []string { return []string{":" + strconv.Itoa(p), "-"} })
			send := start(t, testkit.Open(t, in), nil, "-", host, strconv.Itoa(port))
			if code, stderr := send.wait(t); code != 0 || stderr != "" {
				t.Fatalf("sender: exit %d, stderr %q", code, stderr)
			}
			if code, stderr := recv.wait(t); code != 0 || stderr != "" {
				t.Fatalf("receiver: exit %d, stderr %q", code, stderr)
			}
			checkOutFile(t, out, data)
		})
		t.Run(host+"/sender-listens", func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			// tcppipe - :PORT < in;  tcppipe HOST PORT - > out
			send, port := startListening(t, testkit.Open(t, in), nil, func(p int) []string { return []string{"-", ":" + strconv.Itoa(p)} })
			recv := start(t, nil, testkit.Create(t, out), host, strconv.Itoa(port), "-")
			if code, stderr := recv.wait(t); code != 0 || stderr != "" {
				t.Fatalf("receiver: exit %d, stderr %q", code, stderr)
			}
			if code, stderr := send.wait(t); code != 0 || stderr != "" {
				t.Fatalf("sender: exit %d, stderr %q", code, stderr)
			}
			checkOutFile(t, out, data)
		})
	}
}

// cutShort is the last line of a transfer cut short: what happened, then how many bytes
// went through.
var cutShort = regexp.MustCompile(`(?m)^tcppipe: (.*) after (\d+) bytes \([0-9.]+ [KMG]?i?B\)\n\z`)

// TestSIGTERMMidTransfer runs a slow, rate-limited transfer to host "." (the least host
// refuses, the next takes it) with -i 1, sees the count written back twice while it runs,
// then sends SIGTERM: tcppipe exits 1 saying how many bytes went through, the receiver got
// exactly those, and the file holds them, with its other lines intact.
func TestSIGTERMMidTransfer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	refused, closeRefused, err := refusedPort()
	if err != nil {
		t.Fatal(err)
	}
	defer closeRefused()
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	file := fmt.Sprintf("# pool\n127.0.0.1:%d 0\nnot a host line\n127.0.0.1 10\n", refused)
	if err := os.WriteFile(hosts, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	in, data := randomFile(t, 4<<20) // 16 s at 256 KiB/s: still running when signalled
	p := start(t, testkit.Open(t, in), nil, "-i", "1", "-l", "256K", "-n", hosts, "-", ".", strconv.Itoa(port))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	received := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(c)
		received <- b.Bytes()
	}()
	count := func() uint64 {
		b, _ := os.ReadFile(hosts)
		m := regexp.MustCompile(`(?m)^127\.0\.0\.1 (\d+)$`).FindSubmatch(b)
		if m == nil {
			return 0
		}
		n, _ := strconv.ParseUint(string(m[1]), 10, 64)
		return n
	}
	var first uint64
	testkit.WaitUntil(t, 10*time.Second, "the first write-back", func() bool { first = count(); return first > 10 })
	testkit.WaitUntil(t, 10*time.Second, "the second write-back", func() bool { return count() > first })
	if p.Exited() {
		t.Fatalf("tcppipe exited before the signal: %s", p.Log)
	}
	n, stderr := interrupt(t, p, syscall.SIGTERM, received, data)
	want := strings.Replace(file, "127.0.0.1 10\n", fmt.Sprintf("127.0.0.1 %d\n", 10+n), 1)
	if b, _ := os.ReadFile(hosts); string(b) != want {
		t.Errorf("hosts file:\n%s\nwant:\n%s", b, want)
	}
	for _, w := range []string{
		fmt.Sprintf("tcppipe: connecting to 127.0.0.1:%d: connection refused; trying the next host, 127.0.0.1:", refused),
		"tcppipe: warning: " + hosts + ":3: malformed entry: more than two fields\n",
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q: want %q", stderr, w)
		}
	}
}

// TestSIGTERMWhileWaiting signals a tcppipe waiting for its connection: it exits 1 with one
// line, and its -b file is not touched.
func TestSIGTERMWhileWaiting(t *testing.T) {
	t.Parallel()
	bind := filepath.Join(t.TempDir(), "bind")
	if err := os.WriteFile(bind, []byte("127.0.0.1 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := startListening(t, nil, nil, func(port int) []string { return []string{"-b", bind, ":" + strconv.Itoa(port), "-"} })
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, stderr := p.wait(t)
	if code != 1 || stderr != "tcppipe: interrupted by signal while waiting for a connection\n" {
		t.Errorf("exit %d, stderr %q; want 1, one line saying it was interrupted while waiting", code, stderr)
	}
	if b, _ := os.ReadFile(bind); string(b) != "127.0.0.1 5\n" {
		t.Errorf("bind file changed: %q", b)
	}
	if _, err := os.Stat(bind + ".lock"); err == nil {
		t.Errorf("%s.lock was created with nothing to write", bind)
	}
}

// TestPeerReset: the receiver resets mid-transfer; the sender exits 1 saying how many
// bytes went through.
func TestPeerReset(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	in, data := randomFile(t, 32<<20)
	p := start(t, testkit.Open(t, in), nil, "-", "127.0.0.1", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	code, stderr := p.wait(t)
	m := cutShort.FindStringSubmatch(stderr)
	if code != 1 || m == nil || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q; want 1 and one line saying how many bytes went through", code, stderr)
	}
	if n, _ := strconv.Atoi(m[2]); n < 256<<10 || n >= len(data) {
		t.Errorf("%d bytes went through; want from 256 KiB to less than all", n)
	}
	if want := "DESTINATION " + c.LocalAddr().String() + " reset by peer"; m[1] != want {
		t.Errorf("cause %q: want %q", m[1], want)
	}
}

// TestStdoutClosed: a reader that goes away is a write error like any other: exit 1 with
// the bytes-through message, not death by SIGPIPE, whichever copy path (write for a file
// source, splice for a socket source) meets it.
func TestStdoutClosed(t *testing.T) {
	t.Parallel()
	in, data := randomFile(t, 8<<20)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"stdin", []string{"-", "-"}},
		{"socket", nil}, // :PORT -, fed by a second tcppipe
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			var p *proc
			if tc.args != nil {
				p = start(t, testkit.Open(t, in), w, tc.args...)
			} else {
				var port int
				p, port = startListening(t, nil, w, func(port int) []string { return []string{":" + strconv.Itoa(port), "-"} })
				start(t, testkit.Open(t, in), nil, "-", "127.0.0.1", strconv.Itoa(port)) // ends by itself when p does
			}
			w.Close()
			if _, err := io.ReadFull(r, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			r.Close()
			code, stderr := p.wait(t)
			m := cutShort.FindStringSubmatch(stderr)
			if code != 1 || m == nil || m[1] != "writing to stdout: broken pipe" {
				t.Fatalf("exit %d, stderr %q; want 1 and the bytes-through message for a broken pipe", code, stderr)
			}
			if n, _ := strconv.Atoi(m[2]); n >= len(data) {
				t.Errorf("%d bytes said to be through a pipe that was closed after 1", n)
			}
		})
	}
}

// TestInaddrDefault checks that the command reads INADDR_DEFAULT, as a name too: the
// connection comes from that address.
func TestInaddrDefault(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	for _, local := range []string{"127.0.0.6", "localhost"} {
		cmd := exec.Command(binPath, "-", "127.0.0.1", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		cmd.Env = append(os.Environ(), "INADDR_DEFAULT="+local, "GORACE="+goraceNoSleep())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("INADDR_DEFAULT=%s: %v: %s", local, err, out)
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"127.0.0.6": "127.0.0.6", "localhost": "127.0.0.1"}[local]
		if ip := c.RemoteAddr().(*net.TCPAddr).IP.String(); ip != want {
			t.Errorf("INADDR_DEFAULT=%s: connection from %s; want %s", local, ip, want)
		}
		c.Close()
	}
}
