package testkit

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A Proc reports the status a process exits with, and what it wrote to stderr.
func TestProcExit(t *testing.T) {
	p := Start(t, "sh", "-c", "echo 'tool: gone wrong' >&2; exit 3")
	if code, _ := p.Exit(t, 10*time.Second); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	p.WaitLog(t, `^tool: gone wrong$`, 1, time.Second)
	// A program that stops cleanly on SIGTERM, as the tools do.
	q := Start(t, "sh", "-c", `trap 'exit 0' TERM; echo ready >&2; while :; do sleep 0.05; done`)
	q.WaitLog(t, `^ready$`, 1, 10*time.Second)
	if q.Exited() {
		t.Fatal("the program exited at once")
	}
	if took := q.Stop(t, syscall.SIGTERM, 10*time.Second); took > 5*time.Second {
		t.Errorf("SIGTERM took %v", took)
	}
}

// A process killed by a signal has no exit status 0 (Stop would fail the test).
func TestProcSignalled(t *testing.T) {
	p := StartProgram(t, "sleep", "30")
	p.Signal(t, syscall.SIGKILL)
	if code, _ := p.Exit(t, 10*time.Second); code == 0 {
		t.Error("a killed process reports status 0")
	}
}

// WaitFor wakes on the write that completes the count, long before its deadline.
func TestLogBufWaitFor(t *testing.T) {
	l := NewLogBuf()
	go func() {
		for _, line := range []string{"open #1\n", "noise\n", "open #2\n"} {
			time.Sleep(10 * time.Millisecond) // spacing the writes, not a synchronisation
			_, _ = l.Write([]byte(line))
		}
	}()
	start := time.Now()
	m := l.WaitFor(t, `^open #(\d+)$`, 2, 10*time.Second)
	if m[1] != "1" || l.Count(`^open`) != 2 || time.Since(start) > 5*time.Second {
		t.Errorf("WaitFor = %q after %v, %d lines", m, time.Since(start), l.Count(`^open`))
	}
}

// An echo backend on either loopback sends back, by length and SHA-256, what it got.
func TestEchoRoundTrip(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		b := StartBackend(t, net.JoinHostPort(host, "0"), Echo)
		c := Dial(t, b.Addr())
		RoundTrip(t, c, 7, 300000)
		c.Close()
		WaitUntil(t, 5*time.Second, "the accept counted", func() bool { return b.Accepts.Load() == 1 })
	}
}

// A ClosedPort refuses connections, and no listener can take it while the test runs.
func TestClosedPort(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, strconv.Itoa(ClosedPort(t, host)))
		if c, err := net.DialTimeout("tcp", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dial %s: %v, want connection refused", addr, err)
		}
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			t.Errorf("listen %s worked: the port is not held", addr)
		}
	}
}
