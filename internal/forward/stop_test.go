package forward

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"regexp"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/sock"
	"shd-tcp-tools/internal/testkit"
)

// On a stop, the listener closes at once, open connections go on for the grace period and
// are cut after it; Serve returns nil as soon as the last one ends, and no goroutine is left.
// Not parallel, so that the goroutine count is this test's own.
func TestGracefulStop(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("finishes within grace", func(t *testing.T) {
		be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
		pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Grace: 20 * time.Second})
		c := testkit.Dial(t, pf.addr)
		testkit.RoundTrip(t, c, 1, 1000)
		stopped := make(chan error, 1)
		go func() { stopped <- pf.stop() }()
		pf.log.WaitFor(t, `stopping: 1 connection open, letting it finish for 20s$`, 1, 5*time.Second)
		if c2, err := net.DialTimeout("tcp", pf.addr, 2*time.Second); err == nil {
			c2.Close()
			t.Error("a new connection was accepted after the stop")
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("new connection after the stop: %v, want connection refused", err)
		}
		testkit.RoundTrip(t, c, 2, 100000) // still served
		start := time.Now()
		c.Close()
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after the last connection ended")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Serve returned %v after the last connection ended", d)
		}
		if pf.log.Count(`cutting`) != 0 {
			t.Errorf("a connection was cut:\n%s", pf.log.String())
		}
	})
	t.Run("cut after grace", func(t *testing.T) {
		be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
		pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Grace: 300 * time.Millisecond})
		c := testkit.Dial(t, pf.addr)
		testkit.RoundTrip(t, c, 1, 1000)
		start := time.Now()
		if err := pf.stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
			t.Errorf("Serve returned %v after the stop, want a little over the 300ms grace", d)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("reading the cut connection: %v, want a reset", err)
		}
		pf.log.WaitFor(t, `cutting 1 connection$`, 1, time.Second)
		pf.log.WaitFor(t, `close #1 .*end="cut: stopped"$`, 1, time.Second)
	})
	t.Run("cut while connecting", func(t *testing.T) {
		silent := testkit.Blackhole(t)
		pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, silent), Grace: 300 * time.Millisecond})
		c := testkit.Dial(t, pf.addr)
		testkit.WaitUntil(t, 5*time.Second, "the connection to be open", func() bool { return pf.Open() == 1 })
		if err := pf.stop(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("reading the cut connection: %v, want a reset", err)
		}
		// The line names the destination that was being tried, not "-".
		pf.log.WaitFor(t, `failed #1 127\.0\.0\.1:\d+ -> `+regexp.QuoteMeta(silent)+`: cut: stopped$`, 1, time.Second)
	})
	testkit.WaitUntil(t, 10*time.Second, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

// A connection whose outgoing socket cannot be created for lack of descriptors waits,
// still connected, while accepting pauses (with one log line, not one per failure), and is
// served as soon as a socket can be had. The socket seam plays the shortage.
func TestSocketShortageWaits(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	var calls atomic.Int64
	short := func(a netip.Addr) (int, error) {
		if calls.Add(1) <= 3 {
			return -1, syscall.EMFILE
		}
		return sock.Socket(a)
	}
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr())}, func(s *Server) { s.socket = short })
	testkit.RoundTrip(t, testkit.Dial(t, pf.addr), 1, 1000)
	if n := calls.Load(); n != 4 {
		t.Errorf("%d socket calls, want 3 failed and 1 served", n)
	}
	pf.log.WaitFor(t, `out of descriptors or memory \(socket: too many open files\): pausing accept for 5ms`, 1, time.Second)
	pf.log.WaitFor(t, `serving again after 3 failures for lack of descriptors or memory$`, 1, time.Second)
	if n := pf.log.Count(`out of descriptors or memory`); n != 1 {
		t.Errorf("%d back-off lines for 3 failures in well under a second, want 1:\n%s", n, pf.log.String())
	}
	if pf.log.Count(`failed #`) != 0 {
		t.Errorf("a connection that waited for a descriptor was logged as failed:\n%s", pf.log.String())
	}
}

// When the shortage outlasts the connect timeout, the client is reset and the failure
// logged, and accepting goes on.
func TestSocketShortageGivesUp(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	var failing atomic.Bool
	failing.Store(true)
	short := func(a netip.Addr) (int, error) {
		if failing.Load() {
			return -1, syscall.EMFILE
		}
		return sock.Socket(a)
	}
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), ConnectTimeout: 300 * time.Millisecond},
		func(s *Server) { s.socket = short })
	c := testkit.Dial(t, pf.addr)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client: %v, want a reset", err)
	}
	pf.log.WaitFor(t, `failed #1 \S+ -> \S+: socket: too many open files$`, 1, time.Second)
	failing.Store(false)
	testkit.RoundTrip(t, testkit.Dial(t, pf.addr), 1, 1000)
}
