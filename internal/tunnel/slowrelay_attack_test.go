package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tlslink"
)

// Attacks on connecttwo by a relay that is slow or sick, at hundreds of links: each test
// runs a hostile link port (a Go listener on loopback) for a while, watching what the
// agent costs and how often it comes back, then gives the port to a real relay and wants
// the pool full and a client served.

// shakeAsRelay runs listentwo's side of a link's handshake on c (inside TLS with srv),
// admitting the link, and returns what the link's bytes then travel on.
func shakeAsRelay(c *net.TCPConn, srv *tlslink.Server, timeout time.Duration) (net.Conn, error) {
	p := linkParams{rand: rand.Reader, timeout: timeout}
	var rw net.Conn = c
	if srv != nil {
		tc := tls.Server(c, srv.Config())
		_ = c.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		binding, err := tlslink.Exporter(tc.ConnectionState())
		if err != nil {
			return nil, err
		}
		p.binding, p.frames, rw = binding, true, tc
	}
	ok := func() error { return nil }
	if err := serverHandshake(rw, p, serverHooks{opened: ok, admit: ok, release: func() {}}); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return rw, nil
}

// relayTakesOver closes the hostile link port ln and runs a real relay (rc, with TLS when
// rc.TLS is set) on its address, with a fresh clients' port, until the test ends: tn's
// relay, relayLog and clients are then the real relay's.
func relayTakesOver(t *testing.T, host string, ln *net.TCPListener, rc RelayConfig, tn *tunnel) {
	t.Helper()
	addr := ln.Addr().String()
	ln.Close()
	var links *net.TCPListener
	for deadline := time.Now().Add(testTimeout); links == nil; {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			links = l.(*net.TCPListener)
		} else if time.Now().After(deadline) {
			t.Fatalf("listening on %s again: %v", addr, err)
		} else {
			time.Sleep(10 * time.Millisecond) // a poll, with a deadline
		}
	}
	t.Cleanup(func() { links.Close() })
	tn.clients, tn.links = listen(t, host), links
	tn.relayLog = newSink(t, "listentwo")
	rc.Clients, rc.Links, rc.Log = epOf(t, tn.clients.Addr()), epOf(t, links.Addr()), tn.relayLog.logger()
	r, err := NewRelay(rc)
	if err != nil {
		t.Fatal(err)
	}
	tn.relay = r
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Serve(ctx, tn.clients, links); close(done) }()
	t.Cleanup(func() { stop(); waitDone(t, "Relay.Serve", done) })
}

// serveThrough sends a client's n bytes through tn's relay to the echo service and wants
// them back, by length and checksum.
func serveThrough(t *testing.T, tn *tunnel, seed uint64, n int64) {
	t.Helper()
	c := dial(t, tn.clients)
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	sent := make(chan error, 1)
	go func() {
		_, err := testkit.Send(c, seed, n)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	got, err := testkit.Receive(c)
	if werr := <-sent; werr != nil {
		t.Errorf("a client through the real relay: sending: %v", werr)
	}
	if want := testkit.Expected(seed, n); err != nil || got != want {
		t.Errorf("a client through the real relay: got back %v (%v), want %v", got, err, want)
	}
	c.Close()
}

// downs counts the down lines in an agent's log, and of those the ones that name the
// retry their slot waits for, and the shortest such wait.
func downs(log string) (down, retried int, shortest float64) {
	shortest = -1
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, " down ") || !strings.Contains(line, " link #") {
			continue
		}
		down++
		i := strings.LastIndex(line, "; retry ")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i+len("; retry "):]) // N in D.DDDs
		if len(f) != 3 || f[1] != "in" {
			continue
		}
		d, err := strconv.ParseFloat(strings.TrimSuffix(f[2], "s"), 64)
		if err != nil {
			continue
		}
		retried++
		if shortest < 0 || d < shortest {
			shortest = d
		}
	}
	return down, retried, shortest
}

// TestAttackRelayResetsAfterHandshake: a relay that completes every link's handshake
// (OK) and resets the link at once, to a --pool 300 agent for 1 s, then a real relay on
// its port. Each link lost so soon after its verdict must count as a failure of its
// slot, which backs off before the next (a relay that takes links and drops them is not
// hammered): every such down line names its retry and delay (at least 0.25 s), the sick
// relay sees at most three links per slot in the second (the first, 0.25-0.5 s later,
// then 0.5-1 s), and the agent's descriptors stay within the pool and the links being
// opened. No link the relay reset may stay counted idle: the real relay gets the whole
// pool within 2 s and a client's 256 KiB go through and back (length and SHA-256).
func TestAttackRelayResetsAfterHandshake(t *testing.T) {
	resetsAfterHandshake(t, "127.0.0.1", false, 300)
}

// TestAttackTLSRelayResetsAfterHandshake: the same with TLS links (--tls-pin), over IPv6
// loopback, at --pool 100 (a TLS handshake costs each side a key exchange).
func TestAttackTLSRelayResetsAfterHandshake(t *testing.T) {
	resetsAfterHandshake(t, "::1", true, 100)
}

func resetsAfterHandshake(t *testing.T, host string, useTLS bool, pool int) {
	var srv *tlslink.Server
	if useTLS {
		srv = newTLSServer(t)
	}
	svc := startService(t, host, echoMode)
	ln, accepts := linkPort(t, host, func(c *net.TCPConn) {
		if _, err := shakeAsRelay(c, srv, time.Second); err == nil {
			_ = c.SetLinger(0) // the reset, as the handler returns
		}
	})
	tn := &tunnel{}
	ac := AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: pool,
		HandshakeTimeout: 500 * time.Millisecond, BackoffMax: time.Second}
	rc := RelayConfig{MaxLinks: pool + maxBurst, MaxHandshakes: 2 * maxOpening}
	if srv != nil {
		ac.TLS, rc.TLS = pinned(t, srv.Pin), srv
	}
	base := fds(t)
	startAgent(t, ac, tn)
	start := time.Now()
	most := 0
	for time.Since(start) < time.Second {
		most = max(most, fds(t)-base)
		time.Sleep(20 * time.Millisecond) // the attack runs for its time
	}
	n := accepts.Load()
	log := tn.agentLog.String()
	down, retried, shortest := downs(log)
	t.Logf("in 1s: %d links accepted and reset, %d down lines, %d of them with a retry (the shortest %.3fs); %d log lines; descriptors at most %d above the start",
		n, down, retried, shortest, strings.Count(log, "\n"), most)
	if n > int64(3*pool) {
		t.Errorf("the relay that resets links got %d in 1s from --pool %d, want at most %d: the slots do not back off", n, pool, 3*pool)
	}
	if down == 0 || retried != down {
		t.Errorf("%d links down, %d of them followed by a backoff, want every one (a link lost within a second of its verdict is a failure):\n%s", down, retried, testkit.Tail(log, 10))
	}
	if retried > 0 && shortest < 0.25 {
		t.Errorf("a link lost at once is retried after %.3fs, want at least 0.25s", shortest)
	}
	// A socket per link up or being opened (both ends of each are this process's: the
	// relay's handlers run here too), and the loops' own.
	if limit := 2*pool + 2*maxOpening + 16; most > limit {
		t.Errorf("descriptors grew by %d, want at most %d", most, limit)
	}

	relayTakesOver(t, host, ln, rc, tn)
	took := time.Now()
	ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
	defer cancel()
	if err := tn.relay.WaitIdle(ctx, pool); err != nil {
		t.Fatalf("the real relay has %d of the %d links 2s after it took the port over; the agent counts %d idle:\n%s",
			tn.relay.IdleLinks(), pool, tn.agent.IdleLinks(), testkit.Tail(tn.agentLog.String(), 10))
	}
	t.Logf("%d links up %v after the real relay took the port over", pool, time.Since(took).Round(time.Millisecond))
	serveThrough(t, tn, 1, 256<<10)
}
