package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
)

// fakeRelay accepts the agent's next link on links and completes its handshake as a
// relay would, returning the link once the agent counts it idle.
func fakeRelay(t *testing.T, links *net.TCPListener, tn *tunnel, hello bool) *net.TCPConn {
	t.Helper()
	_ = links.SetDeadline(time.Now().Add(testTimeout))
	link, err := links.AcceptTCP()
	if err != nil {
		t.Fatalf("accepting a link: %v", err)
	}
	t.Cleanup(func() { link.Close() })
	err = serverHandshake(link, linkParams{hello: hello, rand: rand.Reader, timeout: testTimeout}, serverHooks{
		admit: func() error { return nil }, release: func() {}})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return link
}

// TestAttackBlackholeService: a service that never completes a connect. Each taken link
// must be reset and logged once the dial timeout passes, the two links' dials must run
// side by side on the one loop (not one after the other), and the agent must replace
// both links.
func TestAttackBlackholeService(t *testing.T) {
	hole := testkit.Blackhole(t)
	const dialTimeout = 1500 * time.Millisecond
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{Service: epOf(t, mustAddr(t, hole)), Hello: true, Pool: 2, Loops: 1, DialTimeout: dialTimeout}, &tn)
	tn.waitPools(t, 2, 2)
	start := time.Now()
	ends := make(chan time.Duration, 2)
	for range 2 {
		c := dial(t, tn.clients)
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(testTimeout))
			_, _ = io.Copy(io.Discard, c)
			ends <- time.Since(start)
		}()
	}
	var last time.Duration
	for range 2 {
		last = <-ends
	}
	if last < dialTimeout || last > 2*dialTimeout-100*time.Millisecond {
		t.Errorf("the two clients ended %v after they came; the dials of %v each should overlap", last, dialTimeout)
	}
	tn.agentLog.waitCount(`failed #\d .* -> `+regexpQuote(hole)+`: connecting to .*timed out`, 2)
	tn.waitPools(t, 2, 2)
}

func mustAddr(t *testing.T, s string) net.Addr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAttackBadHello: a fake relay that sends a malformed, an oversize or an unfinished
// hello on a taken link. The agent must reset the link, log why, never connect to the
// service, and open a replacement link, on both loopbacks.
func TestAttackBadHello(t *testing.T) {
	cases := []struct{ name, hello, log string }{
		{"malformed", "PROXY TCP4 nonsense\r\n", `failed #1 .*: .*`},
		{"oversize", "PROXY TCP4 " + strings.Repeat("1", 200), `failed #1 .*not a PROXY v1 header`},
		{"unfinished", "PROXY TCP4 192.0.2.7 ", `failed #1 .*reading hello: handshake timed out`},
		{"closed", "PROXY TCP4 192.0.2.7 ", `failed #1 .*reading hello: link closed`},
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, tc := range cases {
			t.Run(host+"/"+tc.name, func(t *testing.T) {
				svc := startService(t, host, echoMode)
				links := listen(t, host)
				tn := tunnel{links: links}
				startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, HandshakeTimeout: 300 * time.Millisecond}, &tn)
				link := fakeRelay(t, links, &tn, true)
				if err := tn.agent.WaitIdle(ctxT(t), 1); err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(link, tc.hello); err != nil {
					t.Fatal(err)
				}
				if tc.name == "closed" {
					_ = link.CloseWrite()
				}
				expectClosed(t, link)
				tn.agentLog.wait(tc.log)
				fakeRelay(t, links, &tn, true) // the replacement
				if n := svc.accepted.Load(); n != 0 {
					t.Errorf("the service saw %d connections", n)
				}
			})
		}
	}
}

// TestAttackIdleLinkClosedByRelay: a relay that closes (FIN) or resets an idle link. The
// agent must notice, log it and open a new link, on both loopbacks.
func TestAttackIdleLinkClosedByRelay(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, reset := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reset=%v", host, reset), func(t *testing.T) {
				svc := startService(t, host, echoMode)
				links := listen(t, host)
				tn := tunnel{links: links}
				startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1, BackoffBase: time.Millisecond}, &tn)
				link := fakeRelay(t, links, &tn, false)
				if err := tn.agent.WaitIdle(ctxT(t), 1); err != nil {
					t.Fatal(err)
				}
				if reset {
					_ = link.SetLinger(0)
				}
				link.Close()
				want := `link #1 down .*: closed by listentwo`
				if reset {
					want = `link #1 down .*: read: connection reset by peer`
				}
				tn.agentLog.wait(want)
				fakeRelay(t, links, &tn, false)
				if err := tn.agent.WaitIdle(ctxT(t), 1); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestAttackStopWhilePairsStart: the agent stopped (SIGTERM) while a burst of clients'
// links are being taken, dialed and paired on its one loop. Run must return, and every
// client must see its connection end (a reset or an end, never a hang), in every round.
func TestAttackStopWhilePairsStart(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	for round := range 6 {
		var tn tunnel
		startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: 2 * time.Second}, &tn)
		startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 8, Loops: 1}, &tn)
		tn.waitPools(t, 8, 8)
		const n = 8
		ended := make(chan error, n)
		for range n {
			c := dial(t, tn.clients)
			go func() {
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				_, _ = c.Write(make([]byte, 1000))
				_, err := io.Copy(io.Discard, c)
				ended <- err
			}()
		}
		// Stop as the pairs start: once the first client's bytes came back would be too
		// late for most of them; a spin on the relay's pairings is about right.
		testkit.WaitUntil(t, testTimeout, "half the clients paired", func() bool { return tn.relay.stats.pairings.Load() >= n/2 })
		tn.stopAgent()
		waitDone(t, "Agent.Run", tn.agentDone)
		for i := range n {
			select {
			case err := <-ended:
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("round %d: client %d hung after the agent stopped", round, i)
				}
			case <-time.After(testTimeout):
				t.Fatalf("round %d: client %d never ended after the agent stopped", round, i)
			}
		}
	}
}

// TestAttackTLSSlowReader: a client that never reads while its service sends up to 64 MiB
// through TLS links. The tunnel must push back on the service (it stops being able to
// write: bounded buffers, far less than the 64 MiB) and hold only that client's link:
// another client is served meanwhile. Once the slow client reads, it gets every byte the
// service wrote, in order (SHA-256), and the links go on serving clients their own bytes.
func TestAttackTLSSlowReader(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			const total, chunk = 64 << 20, 64 << 10
			wrote := make(chan int, 1)
			svc := &service{ln: listen(t, host)}
			serveEach(t, svc.ln, func(c *net.TCPConn) {
				mode, err := readLineConn(c)
				if err != nil {
					return
				}
				if mode != "stall\n" {
					if _, err := io.Copy(c, c); err == nil {
						_ = c.CloseWrite()
					}
					return
				}
				p, n := pattern(chunk), 0
				for n < total {
					_ = c.SetWriteDeadline(time.Now().Add(time.Second))
					k, err := c.Write(p)
					n += k
					if err != nil {
						break
					}
				}
				wrote <- n
				_ = c.SetWriteDeadline(time.Now().Add(testTimeout))
				_ = c.CloseWrite()
			})
			tn := startTLSTunnel(t, host, svc, 1)
			slow := dial(t, tn.clients)
			if _, err := io.WriteString(slow, "stall\n"); err != nil {
				t.Fatal(err)
			}
			c := dial(t, tn.clients)
			_, _ = io.WriteString(c, "echo\n")
			if _, err := roundTrip(c, 1<<20, 0); err != nil {
				t.Fatalf("a client beside the slow one: %v", err)
			}
			var n int
			select {
			case n = <-wrote:
			case <-time.After(testTimeout):
				t.Fatal("the service never stopped writing")
			}
			if n >= 48<<20 {
				t.Errorf("the service wrote %d MiB to a client that reads nothing: the tunnel buffers without bound", n>>20)
			}
			h := sha256.New()
			for i := 0; i < n; i += chunk {
				h.Write(pattern(chunk)[:min(chunk, n-i)])
			}
			_ = slow.SetReadDeadline(time.Now().Add(testTimeout))
			g := sha256.New()
			got, err := io.Copy(g, slow)
			if err != nil || got != int64(n) || !bytes.Equal(g.Sum(nil), h.Sum(nil)) {
				t.Fatalf("the slow client got %d bytes (%v), sha match %v; the service wrote %d", got, err, bytes.Equal(g.Sum(nil), h.Sum(nil)), n)
			}
			t.Logf("the service could write %.1f MiB before the tunnel pushed back", float64(n)/(1<<20))
			for i := range 3 {
				c := dial(t, tn.clients)
				_, _ = io.WriteString(c, "echo\n")
				if _, err := roundTrip(c, 100<<10+i, 0); err != nil {
					t.Fatalf("client %d after the slow one: %v", i, err)
				}
			}
		})
	}
}

// TestAttackServiceFailover: the service's name resolves to two addresses, the first a
// blackhole that never completes a connect, the second a live service (on the same port).
// As net.Dialer does (and connecttwo did before its links waited on loops), the dial
// timeout bounds the whole connect, spread over the addresses (at least 2 s each), so the
// client is served by the second address well before one whole timeout has passed.
func TestAttackServiceFailover(t *testing.T) {
	hole := testkit.Blackhole(t)
	ap := netip.MustParseAddrPort(hole)
	live, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), ap.Port())))
	if err != nil {
		t.Fatalf("listening on 127.0.0.2 at the blackhole's port: %v", err)
	}
	serveEach(t, live, func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
	const dialTimeout = 6 * time.Second
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{
		Service: endpoint.Endpoint{Host: "service.test", Port: int(ap.Port())}, Hello: true, Pool: 1, DialTimeout: dialTimeout,
		lookup: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{ap.Addr(), netip.MustParseAddr("127.0.0.2")}, nil
		},
	}, &tn)
	tn.waitPools(t, 1, 1)
	start := time.Now()
	c := dial(t, tn.clients)
	if _, err := roundTrip(c, 10000, 0); err != nil {
		t.Fatalf("through the second address: %v", err)
	}
	if took := time.Since(start); took > dialTimeout*3/4 {
		t.Errorf("served after %v: the dead first address took the whole dial timeout of %v", took, dialTimeout)
	}
}

// TestAttackServiceDualStack: the service's name gives a dead IPv6 address first (a broken
// IPv6 route drops the SYNs) and a live IPv4 one. The IPv4 attempt starts racing 300 ms
// later, as net.Dialer would start it, and serves the client long before the IPv6
// attempt's share of the dial timeout (half of it, tried in turn).
func TestAttackServiceDualStack(t *testing.T) {
	v4 := netip.MustParseAddr("127.0.0.1")
	port := testkit.SharedPort(t, v4, netip.IPv6Loopback())
	testkit.BlackholeAt(t, netip.AddrPortFrom(netip.IPv6Loopback(), port))
	live, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(v4, port)))
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, live, func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
	const dialTimeout = 10 * time.Second
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{
		Service: endpoint.Endpoint{Host: "service.test", Port: int(port)}, Hello: true, Pool: 1, DialTimeout: dialTimeout,
		lookup: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.IPv6Loopback(), v4}, nil
		},
	}, &tn)
	tn.waitPools(t, 1, 1)
	for i := range 2 {
		start := time.Now()
		if _, err := roundTrip(dial(t, tn.clients), 10000, 0); err != nil {
			t.Fatalf("client %d: %v\nagent:\n%s", i, err, tn.agentLog)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("client %d served after %v: the IPv4 address did not race the dead IPv6 one", i, took)
		}
		tn.waitPools(t, 1, 1)
	}
}

// TestAttackServiceMoved: the service's name resolved to one address when the idle link
// opened and to another by the time a client takes it (a service that moved, a DNS
// change). The client must be served at the address the name has now, as a dial at the
// client's arrival would: an idle link's looked-up addresses are only kept while fresh.
func TestAttackServiceMoved(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	port := svc.ln.Addr().(*net.TCPAddr).Port
	var now atomic.Pointer[netip.Addr]
	old := netip.MustParseAddr("127.0.0.3") // nothing listens there at the service's port
	now.Store(&old)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{
		Service: endpoint.Endpoint{Host: "service.test", Port: port}, Hello: true, Pool: 1,
		lookup: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{*now.Load()}, nil
		},
		addrsFresh: time.Nanosecond, // stale at once: the test need not wait for it
	}, &tn)
	tn.waitPools(t, 1, 1)
	moved := netip.MustParseAddr("127.0.0.1")
	now.Store(&moved)
	if _, err := roundTrip(dial(t, tn.clients), 10000, 0); err != nil {
		t.Fatalf("a client after the service moved: %v\nagent:\n%s", err, tn.agentLog)
	}
}

// TestAttackFloodBeyondPool: 60 clients at once on a pool of 2 plain links, with hellos and
// without, on both loopbacks. Every client must get its own bytes back (SHA-256), the relay
// must log an open and a close for each, and nothing may fail.
func TestAttackFloodBeyondPool(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, hello := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/hello=%v", host, hello), func(t *testing.T) {
				svc := startService(t, host, echoMode)
				var tn tunnel
				startRelay(t, host, RelayConfig{Hello: hello, Wait: testTimeout}, &tn)
				startAgent(t, AgentConfig{Service: svc.ep(t), Hello: hello, Pool: 2}, &tn)
				tn.waitPools(t, 2, 2)
				const n = 60
				errs := make(chan error, n)
				for i := range n {
					c := dial(t, tn.clients)
					go func() {
						_, err := roundTrip(c, 20000+i, 0)
						errs <- err
					}()
				}
				for range n {
					if err := <-errs; err != nil {
						t.Errorf("a client of the flood: %v", err)
					}
				}
				tn.relayLog.waitCount(`close #\d+ `, n)
				tn.agentLog.waitCount(`close #\d+ `, n)
				if k := tn.relayLog.count(`open #\d+ `); k != n {
					t.Errorf("the relay logged %d opens for %d clients", k, n)
				}
				if k := tn.relayLog.count(`failed #`) + tn.agentLog.count(`failed #`); k != 0 {
					t.Errorf("%d failed lines:\nrelay:\n%s\nagent:\n%s", k, tn.relayLog, tn.agentLog)
				}
				if k := svc.accepted.Load(); k != n {
					t.Errorf("the service saw %d connections for %d clients", k, n)
				}
			})
		}
	}
}

// TestAttackTLSTrimWhileClientsArrive: a burst opens extra TLS links beyond --pool; while
// connecttwo trims them back, clients keep arriving one after another. Each must either
// get its own bytes back (SHA-256) or be ended and logged on both sides: no client lost
// without a line. How many were reset is logged (the documented residual risk of a link
// closed as not needed in the instant a client takes it).
func TestAttackTLSTrimWhileClientsArrive(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	tn := startTLSTunnelTrim(t, "127.0.0.1", svc, 1, 50*time.Millisecond)
	errs := make(chan error, 8)
	for range 8 {
		c := dial(t, tn.clients)
		go func() { _, err := roundTrip(c, 64<<10, 0); errs <- err }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	up := tn.agentLog.count(`link #\d+ up`)
	clients, failed := 8, 0
	// Clients paced by a ticker (load, not synchronisation): slower than the links come
	// back, so that the extra ones stay idle long enough to be trimmed between clients.
	tick := time.NewTicker(40 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 100 && tn.agentLog.count(`not needed: more idle links than the pool size`) < up-1; i++ {
		<-tick.C
		clients++
		if _, err := roundTrip(dial(t, tn.clients), 1000+i, 0); err != nil {
			failed++
		}
	}
	trimmed := tn.agentLog.count(`not needed: more idle links than the pool size`)
	t.Logf("%d links up for the burst, %d trimmed; %d clients in all, %d of them reset while links were trimmed", up, trimmed, clients, failed)
	if trimmed < up-1 {
		t.Errorf("%d of the %d extra links trimmed while clients came", trimmed, up-1)
	}
	// Every client has its close or failed line on the relay, served or not.
	tn.relayLog.waitCount(`(close|failed) #\d+ `, clients)
	if ok := tn.relayLog.count(`close #\d+ .*end="(client|server) closed"`); ok < clients-failed {
		t.Errorf("%d clean closes on the relay for %d clients served", ok, clients-failed)
	}
}

// TestAttackSilentClientWithHellos: with hellos, a client that connects and sends nothing
// still takes a link (the hello is the relay's), reaches the service, and its close is
// passed on as a clean end; the pool refills meanwhile and the next client is served, on
// both loopbacks.
func TestAttackSilentClientWithHellos(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ends := make(chan error, 2)
			ln := listen(t, host)
			serveEach(t, ln, func(c *net.TCPConn) {
				n, err := io.Copy(io.Discard, c)
				if err == nil && n != 0 {
					err = fmt.Errorf("read %d bytes from a silent client", n)
				}
				ends <- err
			})
			var tn tunnel
			startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: epOf(t, ln.Addr()), Hello: true, Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			c := dial(t, tn.clients)
			tn.agentLog.wait(`open #1 `)
			tn.waitPools(t, 1, 1) // the replacement, while the silent client holds its link
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-ends:
				if err != nil {
					t.Fatalf("the service: %v", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("the silent client's close never reached the service")
			}
			c.Close()
			tn.relayLog.wait(`close #1 .*up=0 .*end="client closed"`)
		})
	}
}
