package pipe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/pipe/pipetest"
	"shd-tcp-tools/internal/testkit"
)

// The zero-copy test sends its data from another process, so that this process's I/O
// counters see only the engine. The test binary re-executes itself with helperEnv set.
const helperEnv = "PIPE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "send":
		os.Exit(helperSend())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperSend connects to HELPER_ADDR and sends HELPER_SIZE zero bytes from a sparse file
// (sendfile), then half-closes and waits for the peer to close.
func helperSend() int {
	size, err := strconv.ParseInt(os.Getenv("HELPER_SIZE"), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad HELPER_SIZE")
		return 2
	}
	f, err := os.CreateTemp("", "pipe-helper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := net.Dial("tcp", os.Getenv("HELPER_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if n, err := io.Copy(c, f); err != nil || n != size {
		fmt.Fprintf(os.Stderr, "sent %d of %d: %v\n", n, size, err)
		return 1
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
	return 0
}

// testTimeout bounds every wait in these tests.
const testTimeout = 60 * time.Second

// createFile creates an empty file to be used as the engine's stdout.
func createFile(t testing.TB) (*os.File, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, p
}

// checkFile fails unless the file at path holds exactly want.
func checkFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, path, got, want)
}

// checkBytes compares by length and SHA-256, as a transfer of megabytes is best reported.
func checkBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %x", what,
			len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// engine is one Run of the pipe in the background.
type engine struct {
	finished chan struct{}
	err      error
	ready    chan net.Addr
	stderr   *testkit.LogBuf
	cancel   context.CancelFunc // what SIGINT/SIGTERM does in the command
}

// start runs cfg in the background. Stderr is captured unless cfg sets it; Ready reports
// the listening address. The run is cancelled and waited for when the test ends.
func start(t testing.TB, cfg Config) *engine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &engine{finished: make(chan struct{}), ready: make(chan net.Addr, 1), stderr: testkit.NewLogBuf(), cancel: cancel}
	cfg.Ready = func(a net.Addr) { e.ready <- a }
	if cfg.Stderr == nil {
		cfg.Stderr = e.stderr
	}
	go func() {
		defer close(e.finished)
		e.err = Run(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.finished:
		case <-time.After(testTimeout):
			t.Errorf("engine still running after the test")
		}
	})
	return e
}

// wait returns the engine's result.
// sendToEngine connects to e's listening end on host, sends data and half-closes, then
// waits for e to finish without error.
func sendToEngine(t testing.TB, e *engine, host string, data []byte) {
	t.Helper()
	c, err := net.Dial("tcp", dialAddr(host, e.addr(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := sendAll(c.(*net.TCPConn), data); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); err != nil {
		t.Fatal(err)
	}
}

func (e *engine) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-e.finished:
		return e.err
	case <-time.After(testTimeout):
		t.Fatalf("engine did not finish in %v; stderr: %s", testTimeout, e.stderr)
		return nil
	}
}

// running reports whether the engine has not returned yet.
func (e *engine) running() bool {
	select {
	case <-e.finished:
		return false
	default:
		return true
	}
}

// addr waits for the engine's listening address.
func (e *engine) addr(t testing.TB) *net.TCPAddr {
	t.Helper()
	select {
	case a := <-e.ready:
		return a.(*net.TCPAddr)
	case <-e.finished:
		t.Fatalf("engine ended before listening: %v", e.err)
	case <-time.After(testTimeout):
		t.Fatal("engine did not listen")
	}
	return nil
}

// dialAddr is host with the port of the engine's listener.
func dialAddr(host string, a *net.TCPAddr) string {
	return net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// listen opens a test listener on host, port 0.
func listen(t testing.TB, host string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// accept accepts one connection within the test timeout.
func accept(t testing.TB, ln *net.TCPListener) *net.TCPConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(testTimeout))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// noConnection fails if a connection is waiting on ln. Call it after the code under test
// has returned: a connect it made would be complete, and in the accept queue, by then.
func noConnection(t testing.TB, ln *net.TCPListener) {
	t.Helper()
	ln.SetDeadline(time.Now())
	defer ln.SetDeadline(time.Time{})
	if c, err := ln.AcceptTCP(); err == nil {
		c.Close()
		t.Errorf("a connection reached %s: the error should have come first", ln.Addr())
	}
}

// port returns ln's port.
func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// readAll reads c to EOF (or error) and returns what came.
func readAll(c io.Reader) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(c)
	return b.Bytes(), err
}

// sendAll writes data to c, then half-closes it.
func sendAll(c *net.TCPConn, data []byte) error {
	if _, err := c.Write(data); err != nil {
		return err
	}
	return c.CloseWrite()
}

// reset closes c with a TCP reset.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// refusedPort returns a port on which every IPv4 loopback address, and ::1 where there is
// IPv6, refuses connections: a socket is bound to it and never listens, and stays bound
// until the test ends, so nothing else can listen there meanwhile.
func refusedPort(t testing.TB) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	p := sa.(*unix.SockaddrInet4).Port
	if fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
		t.Cleanup(func() { unix.Close(fd6) })
		unix.SetsockoptInt(fd6, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		unix.Bind(fd6, &unix.SockaddrInet6{Port: p}) // best effort: ::1 may refuse anyway
	}
	return p
}

// hasIPv6 reports whether ::1 can be listened on.
var hasIPv6 = sync.OnceValue(func() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
})

// loopbackHosts are the hosts every transfer test runs over.
func loopbackHosts(t testing.TB) []string {
	hosts := []string{"127.0.0.1", "localhost"}
	if hasIPv6() {
		hosts = append(hosts, "::1")
	} else {
		t.Log("no IPv6 loopback: ::1 cases skipped")
	}
	return hosts
}

// connectEnd is a "HOST PORT" end.
func connectEnd(host string, port int) End {
	return End{Kind: Connect, Endpoint: endpoint.Endpoint{Host: host, Port: port}, Least: host == "."}
}

// listenEnd is ":0": the kernel picks the port, which Ready reports.
func listenEnd() End { return End{Kind: Listen} }

// stdio is "-".
var stdio = End{Kind: Stdio}

// hostCount returns the count of the first entry named name in the host file at path.
func hostCount(t testing.TB, path, name string) uint64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("%s: line %q: %v", path, line, err)
			}
			return n
		}
	}
	t.Fatalf("%s has no entry %q:\n%s", path, name, data)
	return 0
}

// waitFor polls cond every few milliseconds until it holds, and fails the test if it does
// not within d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not a synchronisation
	}
}

// isReset reports whether err is a connection reset or a broken pipe.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// runtimeGoroutines is runtime.NumGoroutine.
func runtimeGoroutines() int { return runtime.NumGoroutine() }

// acceptQueue returns the number of connections waiting in the accept queue of the socket
// listening on port, and whether such a socket was found.
func acceptQueue(t testing.TB, port int) (int, bool) {
	t.Helper()
	n, ok, err := pipetest.ListenQueue(port)
	if err != nil {
		t.Skipf("cannot see accept queues: %v", err)
	}
	return n, ok
}

// stdinPipe returns a pipe like a shell gives a command as its stdin: blocking, so the
// Go runtime cannot poll it and read deadlines do not apply (os.Pipe's are pollable).
func stdinPipe(t testing.TB) (r, w *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "stdin"), os.NewFile(uintptr(p[1]), "stdin-writer")
	if err := r.SetReadDeadline(time.Time{}); err == nil {
		t.Fatal("the pipe takes read deadlines: it does not stand for a shell's stdin")
	}
	return r, w
}

// setReadBuffer sets SO_RCVBUF on a listener; accepted connections inherit it.
func setReadBuffer(ln *net.TCPListener, n int) error {
	raw, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	}); err != nil {
		return err
	}
	return serr
}
