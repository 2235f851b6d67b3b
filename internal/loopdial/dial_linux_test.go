package loopdial

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
	"shd-tcp-tools/internal/testkit"
)

// outcome is what a handler heard of one dial.
type outcome struct {
	addr     netip.AddrPort // the address connected to
	peer     netip.AddrPort // the socket's peer, read on the loop
	err      error          // Failed's error
	failures []failure
	took     time.Duration
}

type failure struct {
	addr netip.AddrPort
	err  error
}

// recorder is a Handler that sends the outcome when the dial ends, and can ask for retries.
type recorder struct {
	lp    *eventloop.Loop
	start time.Time
	out   outcome
	retry func(err error) time.Duration
	done  chan outcome
}

func (r *recorder) AttemptFailed(addr netip.AddrPort, err error, _ time.Duration) time.Duration {
	r.out.failures = append(r.out.failures, failure{addr, err})
	if r.retry != nil {
		return r.retry(err)
	}
	return 0
}

func (r *recorder) Connected(fd int, addr netip.AddrPort) {
	r.out.addr, r.out.took = addr, time.Since(r.start)
	r.out.peer = peerOf(fd)
	_ = r.lp.CloseFD(fd)
	r.done <- r.out
}

func (r *recorder) Failed(err error) {
	r.out.err, r.out.took = err, time.Since(r.start)
	r.done <- r.out
}

// runLoop starts an event loop for the test, stopped at its end.
func runLoop(t *testing.T) *eventloop.Loop {
	t.Helper()
	lp, err := eventloop.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = lp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return lp
}

// dial runs one Dial on lp and waits for its outcome.
func dial(t *testing.T, lp *eventloop.Loop, cfg Config, addrs []netip.Addr, port uint16, retry func(error) time.Duration) outcome {
	t.Helper()
	r := &recorder{lp: lp, retry: retry, done: make(chan outcome, 1)}
	var d Dial
	lp.Post(func() {
		r.start = time.Now()
		d.Start(lp, &cfg, r, addrs, port)
	})
	select {
	case o := <-r.done:
		return o
	case <-time.After(cfg.Timeout + 10*time.Second):
		t.Fatalf("dial to %v port %d: no outcome within %v", addrs, port, cfg.Timeout+10*time.Second)
	}
	return outcome{}
}

// listen listens on addr:port (port 0: any), accepting and closing each connection.
func listen(t *testing.T, addr string, port uint16) uint16 {
	t.Helper()
	be := testkit.StartBackend(t, netip.AddrPortFrom(netip.MustParseAddr(addr), port).String(), func(*net.TCPConn) {})
	return uint16(be.Port())
}

// blackhole makes addr:port (0: any) drop every SYN, as a firewall that drops would.
func blackhole(t *testing.T, addr string, port uint16) uint16 {
	t.Helper()
	return testkit.BlackholeAt(t, netip.AddrPortFrom(netip.MustParseAddr(addr), port)).Port()
}

// sharedPort is a port free on every one of hosts (see testkit.SharedPort).
func sharedPort(t *testing.T, hosts ...string) uint16 {
	t.Helper()
	return testkit.SharedPort(t, addrs(hosts...)...)
}

// The events a connected socket keeps are those a relay.Pair takes over without a change.
func TestEventsArePairEvents(t *testing.T) {
	if Events != relay.PairEvents {
		t.Errorf("loopdial.Events %#x, relay.PairEvents %#x", Events, relay.PairEvents)
	}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestConnects(t *testing.T) {
	lp := runLoop(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		port := listen(t, host, 0)
		o := dial(t, lp, Config{Timeout: 5 * time.Second}, addrs(host), port, nil)
		want := netip.AddrPortFrom(netip.MustParseAddr(host), port)
		if o.err != nil || o.addr != want || o.peer != want || len(o.failures) != 0 {
			t.Errorf("%s: connected to %v (peer %v), err %v, failures %v; want %v with no failure", host, o.addr, o.peer, o.err, o.failures, want)
		}
	}
}

// A refused address is told to the handler and the next one is tried at once.
func TestRefusedThenNext(t *testing.T) {
	lp := runLoop(t)
	port := listen(t, "127.0.0.1", 0) // nothing listens on 127.0.0.2 at that port
	o := dial(t, lp, Config{Timeout: 5 * time.Second}, addrs("127.0.0.2", "127.0.0.1"), port, nil)
	if o.err != nil || o.addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("connected to %v, err %v; want 127.0.0.1", o.addr, o.err)
	}
	if len(o.failures) != 1 || o.failures[0].addr.Addr() != netip.MustParseAddr("127.0.0.2") || !errors.Is(o.failures[0].err, unix.ECONNREFUSED) {
		t.Errorf("failures %v; want 127.0.0.2 refused", o.failures)
	}
}

// Happy Eyeballs: the first family's address drops SYNs, and the other family's starts
// after the fallback delay and wins, long before the first attempt's timeout.
func TestOtherFamilyRacesAfterDelay(t *testing.T) {
	lp := runLoop(t)
	for _, tc := range []struct{ dead, live string }{{"::1", "127.0.0.1"}, {"127.0.0.1", "::1"}} {
		port := sharedPort(t, tc.dead, tc.live)
		blackhole(t, tc.dead, port)
		listen(t, tc.live, port)
		o := dial(t, lp, Config{Timeout: 10 * time.Second}, addrs(tc.dead, tc.live), port, nil)
		if o.err != nil || o.addr.Addr() != netip.MustParseAddr(tc.live) || o.peer != o.addr {
			t.Fatalf("dead %s: connected to %v (peer %v), err %v; want %s", tc.dead, o.addr, o.peer, o.err, tc.live)
		}
		if o.took < DefaultFallbackDelay || o.took > 3*time.Second {
			t.Errorf("dead %s: connected after %v; want the fallback delay (%v) and well under the 10 s timeout", tc.dead, o.took, DefaultFallbackDelay)
		}
		if len(o.failures) != 0 {
			t.Errorf("dead %s: failures %v; the losing attempt is closed, not failed", tc.dead, o.failures)
		}
	}
}

// The first family failing at once starts the other without the fallback delay.
func TestOtherFamilyAtOnceAfterRefusal(t *testing.T) {
	lp := runLoop(t)
	port := listen(t, "::1", 0)
	o := dial(t, lp, Config{Timeout: 10 * time.Second, FallbackDelay: 5 * time.Second}, addrs("127.0.0.1", "::1"), port, nil)
	if o.err != nil || o.addr.Addr() != netip.MustParseAddr("::1") || o.took > 2*time.Second {
		t.Errorf("connected to %v after %v, err %v; want ::1 at once after 127.0.0.1's refusal", o.addr, o.took, o.err)
	}
}

// The timeout is spread over a family's addresses: a dead first address gets half of it
// (at least MinAttempt), and the second still connects.
func TestTimeoutSpreadOverAddresses(t *testing.T) {
	lp := runLoop(t)
	port := sharedPort(t, "127.0.0.2", "127.0.0.1")
	blackhole(t, "127.0.0.2", port)
	listen(t, "127.0.0.1", port)
	o := dial(t, lp, Config{Timeout: 4 * time.Second}, addrs("127.0.0.2", "127.0.0.1"), port, nil)
	if o.err != nil || o.addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("connected to %v, err %v; want 127.0.0.1", o.addr, o.err)
	}
	if o.took < MinAttempt-100*time.Millisecond || o.took > 3500*time.Millisecond {
		t.Errorf("connected after %v; want the dead address to take MinAttempt (%v) of the 4 s", o.took, MinAttempt)
	}
	if len(o.failures) != 1 || !errors.Is(o.failures[0].err, unix.ETIMEDOUT) {
		t.Errorf("failures %v; want 127.0.0.2 timed out", o.failures)
	}
}

// Every address dead: the dial fails at its timeout, having tried them all.
func TestAllDeadTimesOut(t *testing.T) {
	lp := runLoop(t)
	port := sharedPort(t, "::1", "127.0.0.1")
	blackhole(t, "::1", port)
	blackhole(t, "127.0.0.1", port)
	o := dial(t, lp, Config{Timeout: 1500 * time.Millisecond}, addrs("::1", "127.0.0.1"), port, nil)
	if !errors.Is(o.err, unix.ETIMEDOUT) || o.took < 1400*time.Millisecond || o.took > 4*time.Second {
		t.Errorf("err %v after %v; want a timeout after 1.5 s", o.err, o.took)
	}
	if len(o.failures) != 2 {
		t.Errorf("failures %v; want both addresses timed out", o.failures)
	}
}

// A retry asked for by the handler (no descriptor free) tries the same address again.
func TestRetrySameAddress(t *testing.T) {
	lp := runLoop(t)
	port := listen(t, "127.0.0.1", 0)
	short := 2
	cfg := Config{Timeout: 5 * time.Second, Socket: func(a netip.Addr) (int, error) {
		if short > 0 {
			short--
			return -1, unix.EMFILE
		}
		return sock.Socket(a)
	}}
	retry := func(err error) time.Duration {
		if errors.Is(err, unix.EMFILE) {
			return 20 * time.Millisecond
		}
		return 0
	}
	o := dial(t, lp, cfg, addrs("127.0.0.1"), port, retry)
	if o.err != nil || o.addr.Port() != port || len(o.failures) != 2 {
		t.Errorf("connected to %v, err %v, failures %v; want two EMFILE retries, then connected", o.addr, o.err, o.failures)
	}
}

// Stop closes the attempts in flight and nothing more is heard of the dial.
func TestStopClosesAttempts(t *testing.T) {
	lp := runLoop(t)
	port := sharedPort(t, "::1", "127.0.0.1")
	blackhole(t, "::1", port)
	blackhole(t, "127.0.0.1", port)
	before := openFDs(t)
	r := &recorder{lp: lp, done: make(chan outcome, 1)}
	var d Dial
	// Without the Stop, the dial would fail at its timeout, within the second waited below.
	cfg := Config{Timeout: 400 * time.Millisecond, FallbackDelay: 10 * time.Millisecond}
	lp.Post(func() { d.Start(lp, &cfg, r, addrs("::1", "127.0.0.1"), port) })
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) < before+2 { // both families' attempts are in flight
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, want %d: the two attempts never started", openFDs(t), before+2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan bool)
	lp.Post(func() { d.Stop(); stopped <- d.Running() })
	if <-stopped {
		t.Fatal("Running after Stop")
	}
	if n := openFDs(t); n != before {
		t.Errorf("%d descriptors open after Stop, want %d", n, before)
	}
	select {
	case o := <-r.done:
		t.Errorf("the handler heard %+v after Stop", o)
	case <-time.After(cfg.Timeout + time.Second):
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// peerOf returns the address a socket is connected to.
func peerOf(fd int) netip.AddrPort {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// DialConn hands a goroutine a working *net.TCPConn, its error when no address connects,
// and stops at the end of its context, leaving no descriptor behind.
func TestDialConn(t *testing.T) {
	lp := runLoop(t)
	echo := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	cfg := Config{Timeout: 5 * time.Second}
	c, err := DialConn(context.Background(), lp, &cfg, addrs("::1"), uint16(echo.Port()))
	if err != nil {
		t.Fatal(err)
	}
	testkit.RoundTrip(t, c, 7, 100000)
	c.Close()

	refused := uint16(testkit.FreePort(t, "127.0.0.1"))
	if _, err := DialConn(context.Background(), lp, &cfg, addrs("127.0.0.1"), refused); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("to a closed port: %v, want connection refused", err)
	}

	port := blackhole(t, "127.0.0.1", 0)
	before := openFDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := DialConn(ctx, lp, &cfg, addrs("127.0.0.1"), port); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("to a blackhole, ctx ending at 200 ms: %v after %v, want the context's end at once", err, time.Since(start))
	}
	if n := openFDs(t); n != before {
		t.Errorf("%d descriptors open after the stopped dial, want %d", n, before)
	}
}
