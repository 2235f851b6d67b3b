// Package sdtest starts tools the way systemd does, for tests: under
// systemd-socket-activate (Debian package systemd), which binds the sockets and starts the
// tool with them at the first connection, and with a NOTIFY_SOCKET the test reads.
package sdtest

import (
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// Timeout bounds every wait of this package.
const Timeout = 10 * time.Second

// Activated is a tool started under systemd-socket-activate, which execs it in its own
// process: the pid is the tool's.
type Activated struct {
	*testkit.Proc
	// Addrs are the passed sockets' addresses, in the order they are passed (3, 4, ...).
	Addrs []string
}

// Activate runs prog with args under systemd-socket-activate, listening on a free port of
// each of hosts ("127.0.0.1", "::1"), with opts given to systemd-socket-activate
// (--fdname=NAME:NAME, -E VAR=VALUE). In args, {0}, {1}, ... stand for the sockets'
// addresses. It returns once every socket listens; prog starts at the first connection to
// one of them. A port taken in between is tried again.
func Activate(t testing.TB, hosts, opts []string, prog string, args ...string) *Activated {
	t.Helper()
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("socket activation tests need systemd-socket-activate (Debian package systemd): %v", err)
	}
	// No second at exit for a race-enabled tool (the race detector's atexit_sleep_ms).
	opts = append(opts, "-E", "GORACE=atexit_sleep_ms=0")
	for try := 0; ; try++ {
		a := &Activated{}
		argv := []string{}
		for _, h := range hosts {
			addr := net.JoinHostPort(h, strconv.Itoa(testkit.FreePort(t, h)))
			a.Addrs = append(a.Addrs, addr)
			argv = append(argv, "-l", addr)
		}
		argv = append(append(argv, opts...), prog)
		for _, arg := range args {
			for i, addr := range a.Addrs {
				arg = strings.ReplaceAll(arg, "{"+strconv.Itoa(i)+"}", addr)
			}
			argv = append(argv, arg)
		}
		a.Proc = testkit.Start(t, activate, argv...)
		if listening(t, a, len(hosts), try < 3) {
			return a
		}
	}
}

var (
	listeningLine = regexp.MustCompile(`(?m)^Listening on .* as \d+\.$`)
	portTaken     = regexp.MustCompile(`Address already in use`)
)

// listening waits until a's n sockets listen and returns true; it returns false when a
// port was taken and retry is allowed, and fails the test otherwise.
func listening(t testing.TB, a *Activated, n int, retry bool) bool {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for len(listeningLine.FindAllString(a.Log.String(), -1)) < n {
		switch {
		case a.Exited() && retry && portTaken.MatchString(a.Log.String()):
			return false // another test took the port in between
		case a.Exited():
			t.Fatalf("systemd-socket-activate exited before listening:\n%s", a.Log.String())
		case time.Now().After(deadline):
			t.Fatalf("systemd-socket-activate not listening after %v:\n%s", Timeout, a.Log.String())
		}
		tick := time.NewTimer(5 * time.Millisecond) // poll interval, bounded by the deadline
		<-tick.C
	}
	return true
}

// Notify is a NOTIFY_SOCKET (a unixgram socket) that a test reads.
type Notify struct {
	// Path is the socket's name, the value for NOTIFY_SOCKET.
	Path string
	conn *net.UnixConn
}

// NewNotify creates a notify socket in a temporary directory of the test.
func NewNotify(t testing.TB) *Notify {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Notify{Path: path, conn: conn}
}

// Next returns the next message sent to the socket, or fails the test after Timeout.
func (n *Notify) Next(t testing.TB) string {
	t.Helper()
	_ = n.conn.SetReadDeadline(time.Now().Add(Timeout))
	b := make([]byte, 4096)
	k, _, err := n.conn.ReadFrom(b)
	if err != nil {
		t.Fatalf("no message on %s: %v", n.Path, err)
	}
	return string(b[:k])
}

// None fails the test if a message arrives within d: for what must not be sent.
func (n *Notify) None(t testing.TB, d time.Duration) {
	t.Helper()
	_ = n.conn.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 4096)
	if k, _, err := n.conn.ReadFrom(b); err == nil {
		t.Fatalf("an unexpected message on %s: %q", n.Path, b[:k])
	}
}
