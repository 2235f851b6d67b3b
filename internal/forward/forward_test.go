package forward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
)

func dest(t testing.TB, addr string) endpoint.Endpoint {
	t.Helper()
	ep, err := endpoint.ParseHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// A 64 MiB stream each way at once, over IPv4 and over IPv6 loopback, arrives whole and in
// order, and the close line counts every byte.
func TestRelay64MiBBothWays(t *testing.T) {
	t.Parallel()
	const n = 64 << 20
	for i, fam := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(fam, func(t *testing.T) {
			t.Parallel()
			be := testkit.StartBackend(t, fam, testkit.Echo)
			pf := startServer(t, fam, Config{Dest: dest(t, be.Addr())})
			c := testkit.Dial(t, pf.addr)
			testkit.RoundTrip(t, c, uint64(i+1), n)
			c.Close()
			pf.log.WaitFor(t, fmt.Sprintf(`close #1 .* up=%d .* down=%d .*end="client closed"`, n, n), 1, 10*time.Second)
			pf.log.WaitFor(t, `open #1 `+regexp.QuoteMeta(c.LocalAddr().String())+` -> `+regexp.QuoteMeta(be.Addr())+`$`, 1, time.Second)
		})
	}
}

// raiseNoFile makes sure the process may open need descriptors.
func raiseNoFile(t testing.TB, need uint64) {
	t.Helper()
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		t.Fatal(err)
	}
	if r.Cur >= need {
		return
	}
	r.Cur = need
	if r.Max < need {
		r.Max = need // allowed to root only
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		t.Fatalf("this test needs %d open files (ulimit -n): %v", need, err)
	}
}

// 1,000 connections open at once, each with its own bytes echoed back intact.
func TestThousandConcurrentConnections(t *testing.T) {
	const conns = 1000
	// Per connection: client, accepted, dialled and backend sockets, and up to three splice
	// pipes (two in the forwarder, one in the echo backend).
	raiseNoFile(t, conns*10+256)
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr())})

	var echoed sync.WaitGroup
	release := make(chan struct{})
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	echoed.Add(conns)
	for i := range conns {
		wg.Go(func() {
			ok := false
			defer func() {
				if !ok {
					echoed.Done()
				}
			}()
			c, err := net.DialTimeout("tcp", pf.addr, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			size := int64(1000 + i*7)
			sent, err := testkit.Send(c, uint64(i), size)
			if err != nil {
				errs <- fmt.Errorf("conn %d: sending: %w", i, err)
				return
			}
			got, err := testkit.Receive(io.LimitReader(c, size))
			if err != nil || got != sent {
				errs <- fmt.Errorf("conn %d: got %v (%v), want %v", i, got, err, sent)
				return
			}
			ok = true
			echoed.Done()
			<-release
		})
	}
	waited := make(chan struct{})
	go func() { echoed.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
		t.Fatal("connections not echoed within 60s")
	}
	open := pf.Open()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if open != conns {
		t.Errorf("%d connections open at once, want %d", open, conns)
	}
	testkit.WaitUntil(t, 20*time.Second, "every relay to end", func() bool { return pf.Open() == 0 })
	// A loop writes its log lines after the round that closed the connections, and the
	// writing goes on off the loop: wait for the lines, not for the open count.
	pf.log.WaitFor(t, `close #`, conns, 20*time.Second)
	if got := pf.log.Count(`close #`); got != conns {
		t.Errorf("%d close lines, want %d", got, conns)
	}
	if got := be.Accepts.Load(); got != conns {
		t.Errorf("backend accepted %d, want %d", got, conns)
	}
}

// delayedReply is a backend that reads the request to its end, waits, then replies and closes.
type delayedReply struct {
	delay   time.Duration
	replyN  int64
	request chan testkit.Digest
	wrote   chan error
	before  func() // called after the wait, before the reply
}

func (d *delayedReply) handle(c *net.TCPConn) {
	got, err := testkit.Receive(c)
	if err != nil {
		d.request <- testkit.Digest{N: -1}
		return
	}
	d.request <- got
	time.Sleep(d.delay) // the scenario under test: a server that answers late
	if d.before != nil {
		d.before()
	}
	_, err = testkit.Send(c, 99, d.replyN)
	d.wrote <- err
}

// With --lazy, a reply the server sends 0, 2 and 15 s after the client's half-close arrives
// whole.
func TestLazyDelayedReply(t *testing.T) {
	t.Parallel()
	for _, delay := range []time.Duration{0, 2 * time.Second, 15 * time.Second} {
		t.Run(delay.String(), func(t *testing.T) {
			t.Parallel()
			dr := &delayedReply{delay: delay, replyN: 300 << 10, request: make(chan testkit.Digest, 1), wrote: make(chan error, 1)}
			be := testkit.StartBackend(t, "127.0.0.1:0", dr.handle)
			pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Lazy: true, Grace: -1})
			c := testkit.Dial(t, pf.addr)
			sent, err := testkit.Send(c, 7, 200<<10)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(delay + 20*time.Second))
			reply, err := testkit.Receive(c)
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if got := <-dr.request; got != sent {
				t.Errorf("server got %v, client sent %v", got, sent)
			}
			if want := testkit.Expected(99, dr.replyN); reply != want {
				t.Errorf("reply: got %v, want %v", reply, want)
			}
			pf.log.WaitFor(t, `close #1 .*up=204800 .*down=307200 .*end="client closed"`, 1, 5*time.Second)
		})
	}
}

// By default (no --lazy), the client's bytes are all delivered, but once the client
// half-closes both connections are closed: a reply that comes later is lost, as documented.
func TestDefaultModeLosesLateReply(t *testing.T) {
	t.Parallel()
	var pf *running
	closed := make(chan struct{})
	dr := &delayedReply{replyN: 64 << 10, request: make(chan testkit.Digest, 1), wrote: make(chan error, 1),
		before: func() { <-closed }}
	be := testkit.StartBackend(t, "127.0.0.1:0", dr.handle)
	pf = startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr())})
	c := testkit.Dial(t, pf.addr)
	sent, err := testkit.Send(c, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if got := <-dr.request; got != sent {
		t.Errorf("server got %v, client sent %v", got, sent)
	}
	pf.log.WaitFor(t, `close #1 .*up=1048576 .*end="client closed"`, 1, 10*time.Second)
	close(closed)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, _ := testkit.Receive(c) // EOF, or a reset if the reply hit the closed socket first
	if reply.N != 0 {
		t.Errorf("client got %d reply bytes after its half-close; the default mode closes both sides", reply.N)
	}
	<-dr.wrote
}

// A server that sends its answer and closes is delivered whole in the default mode.
func TestDefaultModeServerCloses(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
		_, _ = testkit.Send(c, 11, 5<<20)
	})
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr())})
	c := testkit.Dial(t, pf.addr)
	got, err := testkit.Receive(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := testkit.Expected(11, 5<<20); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	pf.log.WaitFor(t, `close #1 .*down=5242880 .*end="server closed"`, 1, 5*time.Second)
}

// A reset from either side is passed on as a reset, and the close line says who reset.
func TestResetPassthrough(t *testing.T) {
	t.Parallel()
	t.Run("client", func(t *testing.T) {
		t.Parallel()
		got := make(chan int, 1)
		readErr := make(chan error, 1)
		be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
			buf := make([]byte, 1000)
			n, err := io.ReadFull(c, buf)
			got <- n
			if err != nil {
				readErr <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(buf)
			readErr <- err
		})
		pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr())})
		c := testkit.Dial(t, pf.addr)
		if _, err := testkit.Send(c, 1, 1000); err != nil {
			t.Fatal(err)
		}
		if n := <-got; n != 1000 {
			t.Fatalf("backend got %d bytes", n)
		}
		_ = c.SetLinger(0)
		c.Close()
		if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("backend read after the client's reset: %v, want ECONNRESET", err)
		}
		pf.log.WaitFor(t, `close #1 .*up=1000 .*end="reset by client"`, 1, 5*time.Second)
	})
	t.Run("server", func(t *testing.T) {
		t.Parallel()
		be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
			buf := make([]byte, 1000)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			_ = c.SetLinger(0)
		})
		pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr())})
		c := testkit.Dial(t, pf.addr)
		if _, err := testkit.Send(c, 1, 1000); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 10))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client read after the server's reset: %v, want ECONNRESET", err)
		}
		pf.log.WaitFor(t, `close #1 .*up=1000 .*end="reset by server"`, 1, 5*time.Second)
	})
}

// Clients outside the allow list are closed at once and never reach the destination; the
// others are served. IPv4-mapped clients of a dual-stack socket match their IPv4 form.
func TestAllowList(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name           string
		listen, allow  string
		served, refuse string // client source addresses
	}{
		{"host", "127.0.0.1:0", "127.0.0.2", "127.0.0.2", "127.0.0.1"},
		{"cidr", "127.0.0.1:0", "127.0.0.0/30", "127.0.0.3", "127.0.0.5"},
		{"ipv6", "[::1]:0", "::1/128", "::1", ""},
		{"ipv6-refused", "[::1]:0", "10.0.0.0/8", "", "::1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			al, err := allow.Parse(t.Context(), nil, []string{tc.allow})
			if err != nil {
				t.Fatal(err)
			}
			be := testkit.StartBackend(t, tc.listen, testkit.Echo)
			pf := startServer(t, tc.listen, Config{Dest: dest(t, be.Addr()), Allow: al})
			if tc.refuse != "" {
				c := testkit.DialFrom(t, tc.refuse, pf.addr)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(make([]byte, 1))
				if n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
					t.Errorf("refused client read %d, %v; want the connection closed", n, err)
				}
				pf.log.WaitFor(t, `refused `+regexp.QuoteMeta(c.LocalAddr().String())+`: not in the allow list$`, 1, 5*time.Second)
				if got := be.Accepts.Load(); got != 0 {
					t.Errorf("destination accepted %d connections of a refused client", got)
				}
			}
			if tc.served != "" {
				c := testkit.DialFrom(t, tc.served, pf.addr)
				testkit.RoundTrip(t, c, 5, 10000)
				if got := be.Accepts.Load(); got != 1 {
					t.Errorf("destination accepted %d connections, want 1", got)
				}
			}
		})
	}
}

// --insert bytes reach the destination before the client's, and count as sent.
func TestInsert(t *testing.T) {
	t.Parallel()
	insert := []byte("PROXY-ish preamble\r\n")
	got := make(chan []byte, 1)
	be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		got <- b
	})
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Insert: insert})
	c := testkit.Dial(t, pf.addr)
	payload := make([]byte, 256<<10)
	_, _ = io.ReadFull(testkit.NewStream(4), payload)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	b := <-got
	want := append(append([]byte{}, insert...), payload...)
	if string(b) != string(want) {
		t.Fatalf("destination got %d bytes, want %d (insert first)", len(b), len(want))
	}
	pf.log.WaitFor(t, fmt.Sprintf(`close #1 .*up=%d `, len(want)), 1, 5*time.Second)
}

// An idle connection is closed after --idle-timeout; a busy one is not.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), IdleTimeout: 300 * time.Millisecond})
	c := testkit.Dial(t, pf.addr)
	// Busy for longer than the timeout: a small echo every 100 ms.
	tick := time.NewTicker(100 * time.Millisecond)
	for i := range 6 {
		if i > 0 {
			<-tick.C
		}
		testkit.RoundTrip(t, c, uint64(i), 100)
	}
	tick.Stop()
	start := time.Now() // the last activity
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("idle connection: read %d, %v; want a reset (it was cut)", n, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle connection closed after %v, want about 300ms", d)
	}
	pf.log.WaitFor(t, `close #1 .*up=600 .*down=600 .*end="cut: idle timeout"`, 1, 5*time.Second)
}

// -r caps each direction: over about 3 s at 1 MiB/s the average is within 3% and no
// 1-second window carries more than 1.05 x RATE + 64 KiB. Not parallel: the other tests'
// 64 MiB streams would take the CPU the pacing needs.
func TestRateLimitEachWay(t *testing.T) {
	const rate = 1 << 20
	const n = 3 * rate
	type timed struct {
		d     testkit.Digest
		times []time.Time
		sizes []int
	}
	// meter reads r to its end and records when each piece came.
	meter := func(r io.Reader) timed {
		var tm timed
		h := testkit.NewDigester()
		buf := make([]byte, 32<<10)
		for {
			k, err := r.Read(buf)
			if k > 0 {
				tm.times = append(tm.times, time.Now())
				tm.sizes = append(tm.sizes, k)
				h.Write(buf[:k])
			}
			if err != nil {
				break
			}
		}
		tm.d = h.Digest()
		return tm
	}
	// The streams are made before they are sent: generated while sending, under -race on a
	// busy machine, they came slower than the rate, and the average fell short of it.
	stream := func(seed uint64) []byte {
		b := make([]byte, n)
		_, _ = io.ReadFull(testkit.NewStream(seed), b)
		return b
	}
	toClient, toServer := stream(21), stream(22)
	up := make(chan timed, 1)
	be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
		go func() { _, _ = c.Write(toClient); _ = c.CloseWrite() }()
		up <- meter(c)
	})
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Rate: rate, Lazy: true})
	c := testkit.Dial(t, pf.addr)
	go func() { _, _ = c.Write(toServer); _ = c.CloseWrite() }()
	down := meter(c)
	for _, dir := range []struct {
		name string
		tm   timed
		seed uint64
	}{{"up", <-up, 22}, {"down", down, 21}} {
		tm := dir.tm
		if want := testkit.Expected(dir.seed, n); tm.d != want {
			t.Errorf("%s: got %v, want %v", dir.name, tm.d, want)
			continue
		}
		elapsed := tm.times[len(tm.times)-1].Sub(tm.times[0])
		avg := float64(n-tm.sizes[0]) / elapsed.Seconds()
		if avg < 0.97*rate || avg > 1.03*rate {
			t.Errorf("%s: average %.0f B/s over %v, want within 3%% of %d", dir.name, avg, elapsed, rate)
		}
		limit := 1.05*rate + 64<<10
		for i := range tm.times {
			w := 0
			for j := i; j < len(tm.times) && tm.times[j].Sub(tm.times[i]) < time.Second; j++ {
				w += tm.sizes[j]
			}
			if float64(w) > limit {
				t.Errorf("%s: %d bytes in the second from %v, limit %.0f", dir.name, w, tm.times[i].Sub(tm.times[0]), limit)
				break
			}
		}
	}
}

// With no reachable destination the client is closed and every attempt is logged.
func TestDestinationDown(t *testing.T) {
	t.Parallel()
	port := testkit.ClosedPort(t, "127.0.0.1")
	pf := startServer(t, "127.0.0.1:0", Config{Dest: endpoint.Endpoint{Host: "127.0.0.1", Port: port}})
	// The client is reset; on loopback that can happen before its connect call returns.
	c, err := net.DialTimeout("tcp", pf.addr, 5*time.Second)
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var n int
		n, err = c.Read(make([]byte, 1))
		if n != 0 {
			t.Errorf("read %d bytes from a connection whose destination is down", n)
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client: %v, want a reset", err)
	}
	pf.log.WaitFor(t, `failed #1 \S+ -> 127.0.0.1:`+strconv.Itoa(port)+`: connection refused$`, 1, 5*time.Second)
	if pf.log.Count(`open #`) != 0 {
		t.Errorf("an open line for a connection that failed:\n%s", pf.log.String())
	}
}

// A destination given by name is looked up off the event loop; every address it has is
// tried in turn, and a name that does not resolve is logged and the client reset.
func TestDestinationByName(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	port := be.Addr()[strings.LastIndexByte(be.Addr(), ':')+1:]
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, "localhost:"+port)})
	testkit.RoundTrip(t, testkit.Dial(t, pf.addr), 3, 100000)
	pf.log.WaitFor(t, `open #1 \S+ -> localhost:`+port+`$`, 1, 5*time.Second)

	bad := startServer(t, "127.0.0.1:0", Config{Dest: endpoint.Endpoint{Host: "no-such-host.invalid", Port: 80}})
	c := testkit.Dial(t, bad.addr)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client of an unknown name: %v, want a reset", err)
	}
	bad.log.WaitFor(t, `failed #1 \S+ -> no-such-host\.invalid:80: .*no such host`, 1, time.Second)
}

// --insert to a destination that reads nothing ends at the connect timeout with the
// error logged, and the bytes that did go out counted.
func TestInsertTimeout(t *testing.T) {
	t.Parallel()
	// A backend that accepts and never reads: its receive buffer fills, then ours.
	ln := testkit.Listen(t, "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	big := make([]byte, 64<<20)
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, ln.Addr().String()), Insert: big, ConnectTimeout: 500 * time.Millisecond})
	c := testkit.Dial(t, pf.addr)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("client: read %d bytes, %v; want the connection closed", n, err)
	}
	pf.log.WaitFor(t, `close #1 \S+ -> \S+ up=[1-9]\d* .*end="error: sending the inserted data: i/o timeout"$`, 1, 5*time.Second)
}

// When no splice pipe can be had (out of descriptors), bytes go through a buffer instead:
// every one arrives, in order, both ways, with a rate limit too, and the counts are exact.
func TestRelayWithoutPipes(t *testing.T) {
	t.Parallel()
	for _, rate := range []int64{0, 64 << 20} {
		t.Run(fmt.Sprintf("rate=%d", rate), func(t *testing.T) {
			t.Parallel()
			be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
			pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Rate: rate},
				func(s *Server) { s.noPipes = true })
			c := testkit.Dial(t, pf.addr)
			testkit.RoundTrip(t, c, 9, 8<<20)
			c.Close()
			pf.log.WaitFor(t, `close #1 .* up=8388608 .* down=8388608 `, 1, 5*time.Second)
		})
	}
}

// Connections that moved bytes and now wait, idle or half-closed (--lazy), hold no splice
// pipe: two descriptors each, as the warning at start says, not six.
func TestWaitingConnectionsHoldNoPipe(t *testing.T) {
	// Not parallel: it counts this process's pipes.
	pipes := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
				n++
			}
		}
		return n
	}
	base := pipes()
	// The backend echoes, and after the client's end stays open without a word.
	hold := make(chan struct{})
	be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
		_, _ = io.Copy(struct{ io.Writer }{c}, c) // a plain copy: no splice pipe of its own
		<-hold
	})
	t.Cleanup(func() { close(hold) })
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, be.Addr()), Lazy: true, Grace: -1})
	const n = 20
	for i := range n {
		c := testkit.Dial(t, pf.addr)
		testkit.RoundTrip(t, c, uint64(i), 256<<10)
		if i%2 == 1 {
			_ = c.CloseWrite() // half-closed: the other direction stays open
		}
	}
	testkit.WaitUntil(t, 10*time.Second, "the idle connections' pipes back", func() bool {
		runtime.GC() // the pool of empty pipes is emptied by the collector
		return pipes() <= base
	})
	if pf.Open() != n {
		t.Fatalf("%d connections open, want %d", pf.Open(), n)
	}
}
