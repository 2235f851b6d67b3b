package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/endpoint"
)

// TestConcurrentClients runs 24 clients at once through the tunnel, each moving its own
// random bytes both ways, with and without hellos, over IPv4 and IPv6.
func TestConcurrentClients(t *testing.T) {
	for _, tc := range []struct {
		name  string
		host  string
		hello bool
	}{
		{"v4 no hello", "127.0.0.1", false},
		{"v4 hello", "127.0.0.1", true},
		{"v6 hello", "::1", true},
		{"v6 no hello", "::1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const clients, size = 24, 200 << 10
			svc := startService(t, tc.host, echoMode)
			var tn tunnel
			startRelay(t, tc.host, RelayConfig{Hello: tc.hello, Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: tc.hello, Pool: 4}, &tn)
			tn.waitPools(t, 4, 4)

			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := 0; i < clients; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.DialTimeout("tcp", tn.clients.Addr().String(), testTimeout)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					// Vary sizes so the clients end at different times.
					if _, err := roundTrip(c.(*net.TCPConn), size+i*1000, 0); err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := svc.accepted.Load(); got != clients {
				t.Errorf("service accepted %d connections, want %d", got, clients)
			}
			tn.relayLog.waitCount(`close #\d+ .* up=\d+ .*end="client closed"`, clients)
			tn.agentLog.waitCount(`close #\d+ `, clients)
			// Bytes and bandwidth each way are logged.
			if tn.relayLog.count(`close #\d+ \S+ -> link #\d+ \S+ up=2\d{5} \(\d+\.\d\d KiB, [0-9.]+ [KMG]?i?B/s\) down=2\d{5} `) != clients {
				t.Errorf("close lines lack byte counts:\n%s", tn.relayLog)
			}
			// The pool is refilled after the burst.
			tn.waitPools(t, 4, 4)
		})
	}
}

// TestHelloSeenByService checks --send-proxy: the service reads a PROXY header naming the
// client's real address and port, over IPv4 and IPv6, followed by the client's bytes.
func TestHelloSeenByService(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, "127.0.0.1", proxyMode)
			var tn tunnel
			startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, SendProxy: true, Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			c := dial(t, tn.clients)
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			line, err := readLineConn(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := "SRC " + c.LocalAddr().String() + "\n"; line != want {
				t.Errorf("service saw %q, want %q", line, want)
			}
			if _, err := roundTrip(c, 64<<10, 0); err != nil {
				t.Fatal(err)
			}
			proto := map[bool]string{true: "TCP6", false: "TCP4"}[strings.Contains(host, ":")]
			la, ra := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
			want := fmt.Sprintf("PROXY %s %s %s %d %d\r\n", proto, la.IP, ra.IP, la.Port, ra.Port)
			svc.mu.Lock()
			got := svc.headers
			svc.mu.Unlock()
			if len(got) != 1 || got[0] != want {
				t.Errorf("service got headers %q, want [%q]", got, want)
			}
			// The agent logs the client's real address.
			tn.agentLog.wait(`open #1 ` + regexpQuote(c.LocalAddr().String()) + ` \(link #\d+\) -> `)
		})
	}
}

// TestHelloConsumed checks that without --send-proxy the service never sees the header,
// and that a service that speaks first works (the reason hellos exist).
func TestHelloConsumed(t *testing.T) {
	svc := startService(t, "127.0.0.1", bannerMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1}, &tn)
	tn.waitPools(t, 1, 1)
	c := dial(t, tn.clients)
	// The client sends nothing yet: the banner must still come.
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	line, err := readLineConn(c)
	if err != nil || line != bannerText[:len(bannerText)-1]+"\n" {
		t.Fatalf("banner %q, %v", line, err)
	}
	if _, err := roundTrip(c, 100<<10, 0); err != nil {
		t.Fatal(err)
	}
}

func regexpQuote(s string) string {
	r := strings.NewReplacer(".", `\.`, "[", `\[`, "]", `\]`)
	return r.Replace(s)
}

// tap is a TCP proxy between the agent and the relay's link port that records, per link,
// every byte each way, so a test can see exactly what crossed the wire.
type tap struct {
	ln    *net.TCPListener
	mu    sync.Mutex
	conns []*tapConn
}

type tapConn struct {
	mu       sync.Mutex
	toAgent  []byte // relay -> agent
	toRelay  []byte // agent -> relay
	changed  chan struct{}
	messages []string // "A:<bytes>" or "B:<bytes>", one per read, in order of arrival
}

func startTap(t *testing.T, target string) *tap {
	tp := &tap{ln: listen(t, "127.0.0.1")}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		tp.ln.Close()
		cmu.Lock()
		for _, c := range open {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			a, err := tp.ln.AcceptTCP()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			tc := &tapConn{changed: make(chan struct{})}
			tp.mu.Lock()
			tp.conns = append(tp.conns, tc)
			tp.mu.Unlock()
			copyDir := func(dst, src *net.TCPConn, toAgent bool) {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						tc.mu.Lock()
						if toAgent {
							tc.toAgent = append(tc.toAgent, buf[:n]...)
							tc.messages = append(tc.messages, "B>A:"+string(buf[:n]))
						} else {
							tc.toRelay = append(tc.toRelay, buf[:n]...)
							tc.messages = append(tc.messages, "A>B:"+string(buf[:n]))
						}
						close(tc.changed)
						tc.changed = make(chan struct{})
						tc.mu.Unlock()
						if _, err := dst.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.CloseWrite()
			}
			wg.Add(2)
			go copyDir(b.(*net.TCPConn), a, false)
			go copyDir(a, b.(*net.TCPConn), true)
			cmu.Lock()
			open = append(open, a, b)
			cmu.Unlock()
		}
	}()
	return tp
}

func (tc *tapConn) snapshot() (toAgent, toRelay int) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return len(tc.toAgent), len(tc.toRelay)
}

// TestPoolHitCostsOnlyHello shows that serving a client from the pool costs one message
// from relay to agent (the hello) and nothing back before the service answers: no extra
// round trip. A tap between agent and relay records every byte of the link. With TLS the
// TLS handshake is part of the link's handshake: a pool hit is still one record each way,
// the hello's and the service's answer's, each 25 bytes longer than its plaintext
// (a DATA frame's header and TLS's own).
func TestPoolHitCostsOnlyHello(t *testing.T) {
	for _, tc := range []struct{ hello, tls bool }{{true, false}, {false, false}, {true, true}, {false, true}} {
		hello := tc.hello
		t.Run(fmt.Sprintf("hello=%v tls=%v", hello, tc.tls), func(t *testing.T) {
			mode := bannerMode
			if !hello {
				mode = echoMode
			}
			svc := startService(t, "127.0.0.1", mode)
			var tn tunnel
			rc := RelayConfig{Hello: hello, Wait: testTimeout}
			ac := AgentConfig{Service: svc.ep(t), Hello: hello, Pool: 1}
			if tc.tls {
				srv := newTLSServer(t)
				rc.TLS, ac.TLS = srv, pinned(t, srv.Pin)
			}
			startRelay(t, "127.0.0.1", rc, &tn)
			tp := startTap(t, tn.links.Addr().String())
			ac.Relay = epOf(t, tp.ln.Addr())
			startAgent(t, ac, &tn)
			tn.waitPools(t, 1, 1)
			tp.mu.Lock()
			link := tp.conns[0]
			tp.mu.Unlock()
			a0, r0 := link.snapshot()
			link.mu.Lock()
			handshake := len(link.messages)
			link.mu.Unlock()

			c := dial(t, tn.clients)
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			var first string
			if hello {
				// The client says nothing; the service speaks first.
				line, err := readLineConn(c)
				if err != nil || line != "SSH-2.0-tunneltest\r\n" {
					t.Fatalf("banner %q, %v", line, err)
				}
				la, ra := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
				first = "PROXY TCP4 127.0.0.1 127.0.0.1 " + strconv.Itoa(la.Port) + " " + strconv.Itoa(ra.Port) + "\r\n"
			} else {
				first = "ping\n"
				if _, err := io.WriteString(c, first); err != nil {
					t.Fatal(err)
				}
				line, err := readLineConn(c)
				if err != nil || line != first {
					t.Fatalf("echo %q, %v", line, err)
				}
			}
			link.mu.Lock()
			msgs := append([]string(nil), link.messages[handshake:]...)
			toAgent, toRelay := string(link.toAgent[a0:]), string(link.toRelay[r0:])
			link.mu.Unlock()
			wantBack := "SSH-2.0-tunneltest\r\n"
			if !hello {
				wantBack = first
			}
			if tc.tls {
				// One TLS 1.3 record each way: a 5-byte header, the plaintext in one DATA
				// frame (its 3-byte header first), its content type byte and a 16-byte tag.
				const overhead = 5 + frameHeader + 1 + 16
				if len(toAgent) != len(first)+overhead || len(toRelay) != len(wantBack)+overhead {
					t.Errorf("after the handshake the relay sent %d bytes and the agent %d, want one record each: %d and %d",
						len(toAgent), len(toRelay), len(first)+overhead, len(wantBack)+overhead)
				}
				if strings.Contains(toAgent, first) || strings.Contains(toRelay, wantBack) {
					t.Error("the hello or the answer crossed the link in the clear")
				}
			} else if toAgent != first {
				t.Errorf("after the handshake the relay sent %q, want only %q", toAgent, first)
			}
			if !tc.tls && toRelay != wantBack {
				t.Errorf("after the handshake the agent sent %q, want only the service's %q", toRelay, wantBack)
			}
			// Order: exactly one relay->agent message, then the service's answer.
			if len(msgs) < 2 || !strings.HasPrefix(msgs[0], "B>A:") || !strings.HasPrefix(msgs[1], "A>B:") {
				t.Errorf("messages after the handshake: %q", msgs)
			}
			t.Logf("pool hit: relay->agent %d bytes, agent->relay %d bytes", len(toAgent), len(toRelay))
		})
	}
}

// TestWaitExpiry: with no link, a client waits --wait, then is closed and logged. Without
// hellos, a client that sends nothing is closed after --wait too, without ever waiting for
// a link.
func TestWaitExpiry(t *testing.T) {
	var tn tunnel
	const wait = 300 * time.Millisecond
	startRelay(t, "127.0.0.1", RelayConfig{Wait: wait}, &tn)
	for _, speak := range []bool{true, false} {
		c := dial(t, tn.clients)
		if speak {
			io.WriteString(c, "x")
		}
		took := expectClosed(t, c)
		if took < wait-50*time.Millisecond {
			t.Errorf("client closed after %v, before its wait of %v", took, wait)
		}
	}
	tn.relayLog.wait(`failed #1 127\.0\.0\.1:\d+ -> link: no idle link within 300ms`)
	tn.relayLog.wait(`refused 127\.0\.0\.1:\d+: sent nothing within 300ms`)
	if n := tn.relay.WaitingClients(); n != 0 {
		t.Errorf("%d clients still waiting", n)
	}
	if tn.relayLog.count(`failed #2 `) != 0 {
		t.Errorf("the silent client waited for a link:\n%s", tn.relayLog)
	}
}

// TestClientWaitsForLink: a client that comes before any link is served by the first link
// that comes within its wait.
func TestClientWaitsForLink(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Wait: testTimeout}, &tn)
	c := dial(t, tn.clients)
	io.WriteString(c, "x") // without hellos, a client waits for a link once it has spoken
	if err := tn.relay.pool.waitUntil(ctxT(t), func(_, w int) bool { return w == 1 }); err != nil {
		t.Fatal("client never started waiting")
	}
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
	if _, err := roundTrip(c, 50<<10, 1); err != nil {
		t.Fatal(err)
	}
}

// TestPoolRefillBurst: a pool of 2 serves a burst of 12 clients that all stay connected
// until every one of them has been served, so the agent must refill at once.
func TestPoolRefillBurst(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 2}, &tn)
	tn.waitPools(t, 2, 2)
	const burst = 12
	conns := make([]*net.TCPConn, burst)
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := range conns {
		conns[i] = dial(t, tn.clients)
		wg.Add(1)
		go func(c *net.TCPConn) {
			defer wg.Done()
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			msg := fmt.Sprintf("client %d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				errs <- err
				return
			}
			if line, err := readLineConn(c); err != nil || line != msg {
				errs <- fmt.Errorf("client %d: echo %q, %v", i, line, err)
			}
		}(conns[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// All 12 are still open, each on its own link; the pool is full again besides.
	tn.waitPools(t, 2, 2)
	if got := svc.accepted.Load(); got != burst {
		t.Errorf("service accepted %d, want %d", got, burst)
	}
	for _, c := range conns {
		c.Close()
	}
	tn.relayLog.waitCount(`close #`, burst)
}

// TestServiceDown: when the agent cannot reach its service, the client's connection is
// closed at once (not left hanging) and the failure is logged.
func TestServiceDown(t *testing.T) {
	deadEP := deadPort(t)
	for _, hello := range []bool{true, false} {
		t.Run(fmt.Sprintf("hello=%v", hello), func(t *testing.T) {
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Hello: hello, Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: deadEP, Hello: hello, Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			start := time.Now()
			nc, err := net.DialTimeout("tcp", tn.clients.Addr().String(), testTimeout)
			if err == nil {
				// The reset may even beat the dial's return; otherwise it comes now.
				defer nc.Close()
				if !hello {
					io.WriteString(nc, "anyone there?\n")
				}
				expectClosed(t, nc)
			} else if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("dial: %v", err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("client closed only after %v", took)
			}
			tn.agentLog.wait(`failed #1 .* -> ` + regexpQuote(deadEP.String()) + `: connecting to .*connection refused`)
			tn.relayLog.wait(`close #1 .*end="reset by server"`)
			// The agent stays up and refills.
			tn.waitPools(t, 1, 1)
		})
	}
}

// TestServiceDownFloodSummarised: many clients of a service that is down give the agent a
// burst of failed lines and a summary with the count of the others, not a line each; the
// lines and the summary's count add up to the clients.
func TestServiceDownFloodSummarised(t *testing.T) {
	deadEP := deadPort(t)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{Service: deadEP, Hello: true, Pool: 4}, &tn)
	tn.waitPools(t, 4, 4)
	const n = 200
	for range n {
		dialExpectClosed(t, tn.clients)
	}
	tn.stopAgent()
	waitDone(t, "Agent.Run", tn.agentDone)
	log := tn.agentLog.String()
	own := tn.agentLog.count(`failed #\d+ .* -> ` + regexpQuote(deadEP.String()) + `: `)
	counted := 0
	rx := regexp.MustCompile(`(?m)summary: (\d+) more "failed -> ` + regexpQuote(deadEP.String()) + `" in the last \d+s: .*connection refused x\d+; from 127\.0\.0\.1 x\d+$`)
	summaries := rx.FindAllStringSubmatch(log, -1)
	for _, m := range summaries {
		c, _ := strconv.Atoi(m[1])
		counted += c
	}
	if own+counted != n || len(summaries) == 0 || own > strangerBurst*(len(summaries)+1) {
		t.Errorf("%d failed lines and %d counted in %d summaries for %d clients:\n%s", own, counted, len(summaries), n, log)
	}
}

// TestIdleLinkDeath: links that die while idle are dropped from the pool and logged, and a
// client arriving afterwards is never paired with one.
func TestIdleLinkDeath(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Wait: 300 * time.Millisecond}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 3}, &tn)
	tn.waitPools(t, 3, 3)
	tn.stopAgent()
	waitDone(t, "Agent.Run", tn.agentDone)
	tn.waitPools(t, 0, 0)
	tn.relayLog.waitCount(`link #\d+ down 127\.0\.0\.1:\d+: (closed by connecttwo|reset by connecttwo)`, 3)
	c := dial(t, tn.clients)
	io.WriteString(c, "x")
	expectClosed(t, c)
	tn.relayLog.wait(`failed #1 .* no idle link within`)
	if n := svc.accepted.Load(); n != 0 {
		t.Errorf("service saw %d connections", n)
	}
	if tn.relayLog.count(`open #`) != 0 {
		t.Errorf("a client was paired with a dead link:\n%s", tn.relayLog)
	}
}

// deadPort returns a loopback port that refuses connections for the whole test: a socket
// bound to it but not listening holds it, so no other listener can be given it.
func deadPort(t *testing.T) endpoint.Endpoint {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return endpoint.Endpoint{Host: "127.0.0.1", Port: sa.(*unix.SockaddrInet4).Port}
}

func mustAllow(t *testing.T, v ...string) *allow.List {
	t.Helper()
	l, err := allow.Parse(context.Background(), nil, v)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDeadLinkCheckedBeforePairing closes an idle link's far end while its watcher is
// stopped, as when a client takes the link at that very moment: the last check before
// pairing still finds it dead.
func TestDeadLinkCheckedBeforePairing(t *testing.T) {
	s, c := tcpPair(t, "127.0.0.1")
	if err := alive(s); err != nil {
		t.Fatalf("live link: %v", err)
	}
	c.Close()
	// Wait for the FIN to arrive: the watcher (which blocks until readable) returns.
	done := make(chan error, 1)
	go func() { done <- watchIdle(s) }()
	select {
	case err := <-done:
		if err != errLinkClosed {
			t.Fatalf("watchIdle: %v, want %v", err, errLinkClosed)
		}
	case <-time.After(testTimeout):
		t.Fatal("watchIdle never noticed the close")
	}
	if err := alive(s); err != errLinkClosed {
		t.Errorf("alive on a closed link: %v", err)
	}

	s2, c2 := tcpPair(t, "127.0.0.1")
	io.WriteString(c2, "x")
	go func() { done <- watchIdle(s2) }()
	if err := <-done; err != errLinkData {
		t.Errorf("watchIdle with data: %v", err)
	}
	// Stopping a watch with a past deadline leaves the link intact.
	s3, _ := tcpPair(t, "127.0.0.1")
	go func() { done <- watchIdle(s3) }()
	s3.SetReadDeadline(time.Unix(1, 0))
	if err := <-done; err != nil {
		t.Errorf("stopped watch: %v", err)
	}
	s3.SetReadDeadline(time.Time{})
	if err := alive(s3); err != nil {
		t.Errorf("stopped watch hurt the link: %v", err)
	}
}

// TestAllowList: a client not on the list is closed at once, logged, and wakes no link.
func TestAllowList(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	list := mustAllow(t, "192.0.2.0/24")
	startRelay(t, "127.0.0.1", RelayConfig{Allow: list, Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
	tn.waitPools(t, 1, 1)
	if took := dialExpectClosed(t, tn.clients); took > 2*time.Second {
		t.Errorf("refused client closed after %v", took)
	}
	tn.relayLog.wait(`refused 127\.0\.0\.1:\d+: not in the allow list`)
	if tn.relay.IdleLinks() != 1 || svc.accepted.Load() != 0 || tn.agentLog.count(`open #`) != 0 {
		t.Errorf("a refused client woke a link: idle %d, service %d\n%s", tn.relay.IdleLinks(), svc.accepted.Load(), tn.agentLog)
	}

	// The loopback client is allowed once the list names it.
	var tn2 tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Allow: mustAllow(t, "127.0.0.0/8"), Wait: testTimeout}, &tn2)
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn2)
	if _, err := roundTrip(dial(t, tn2.clients), 10<<10, 0); err != nil {
		t.Fatal(err)
	}
}

// TestShutdown: cancelling Serve and Run ends live relays and idle links, and returns.
func TestShutdown(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Wait: testTimeout}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 2}, &tn)
	tn.waitPools(t, 2, 2)
	c := dial(t, tn.clients)
	io.WriteString(c, "hold\n")
	if line, err := readLineConn(c); err != nil || line != "hold\n" {
		t.Fatalf("echo %q %v", line, err)
	}
	tn.waitPools(t, 2, 2) // the taken link has been replaced
	tn.stopRelay()
	waitDone(t, "Relay.Serve", tn.relayDone)
	expectClosed(t, c)
	tn.relayLog.wait(`close #1 .*end="cut: stopped"`)
	tn.relayLog.waitCount(`link #\d+ down .*relay stopping`, 2)
}
