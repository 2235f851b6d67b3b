package tunnel

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
)

// startHeldService is an echo service that holds every connection until n have come: a
// burst of n clients through the tunnel then holds n links at once, and clients beyond the
// links idle wait on the relay for new ones.
func startHeldService(t *testing.T, host string, n int) *service {
	t.Helper()
	s := &service{ln: listen(t, host)}
	var arrived atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	serveEach(t, s.ln, func(c *net.TCPConn) {
		if arrived.Add(1) == int64(n) {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(testTimeout):
			return
		}
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
	return s
}

// TestPlainBurstGrowsPool sends a burst of 16 clients at once, each with its own random
// payload checked by SHA-256, through plain links with --pool 1, on both loopbacks. The
// links opened for the waiting clients are taken as soon as they join the relay's pool, so
// connecttwo opens links beyond --pool (more links up than clients and pool); once the
// burst is over, the links beyond --pool are closed as not needed within idleTrim (the
// seam: 300 ms) and the pool is back at one idle link on both sides.
func TestPlainBurstGrowsPool(t *testing.T) {
	const clients = 16
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startHeldService(t, host, clients)
			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			errs := make(chan error, clients)
			for i := range clients {
				go func() {
					c, err := net.DialTimeout("tcp", tn.clients.Addr().String(), testTimeout)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					_, err = roundTrip(c.(*net.TCPConn), 1+i*7919%(64<<10), 0)
					errs <- err
				}()
			}
			for i := range clients {
				if err := <-errs; err != nil {
					t.Fatalf("client %d of the burst: %v", i+1, err)
				}
			}
			// Settled: one slot, its link idle, none being opened, every link's line written.
			var up, trimmed int
			settled := func() bool {
				up = tn.agentLog.count(`link #\d+ up`)
				trimmed = tn.agentLog.count(`link #\d+ down .*: not needed: more idle links than the pool size`)
				return tn.agent.plainSlots.Load() == 1 && tn.agent.Stats().Connecting == 0 && tn.agent.IdleLinks() == 1 && up-trimmed == 1+clients
			}
			for deadline := time.Now().Add(testTimeout); !settled(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("not back at --pool 1 within %v: %d slots, %d idle, %d links up, %d closed as not needed\nagent:\n%s",
						testTimeout, tn.agent.plainSlots.Load(), tn.agent.IdleLinks(), up, trimmed, tn.agentLog)
				}
			}
			tn.waitPools(t, 1, 1)
			if up <= clients+1 {
				t.Errorf("%d links up for %d clients and --pool 1: the pool did not grow", up, clients)
			}
			if n := tn.agentLog.count(`failed|retry`); n != 0 {
				t.Errorf("%d links failed or retried, want none\nagent:\n%s", n, tn.agentLog)
			}
		})
	}
}

// TestPlainBurstRefusedNotRetried: a relay that takes its first link at once (a client
// waited: the pool grows by a link beyond --pool 1) and then refuses every link with
// "idle link pool is full". The link beyond --pool is tried once and not again; only the
// --pool link retries, with its backoff, so the relay gets one attempt more than before
// and no second retrier. IPv4 and IPv6 loopback.
func TestPlainBurstRefusedNotRetried(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			var n atomic.Int64
			ln, _ := linkPort(t, host, func(c *net.TCPConn) {
				first := n.Add(1) == 1
				if !readOpening(c) {
					return
				}
				var g offer
				_, _ = rand.Read(g.nonce[:])
				if _, err := io.WriteString(c, g.text()+"\n"); err != nil {
					return
				}
				if _, err := readLineConn(c); err != nil {
					return
				}
				if !first {
					_, _ = io.WriteString(c, "ERR idle link pool is full\n")
					return
				}
				if _, err := io.WriteString(c, "OK mac=-\nping\n"); err != nil { // taken at once
					return
				}
				_ = c.CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			})
			var tn tunnel
			startAgent(t, AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 1,
				BackoffBase: 20 * time.Millisecond, BackoffMax: 5 * time.Second}, &tn)
			relay := regexpQuote(epOf(t, ln.Addr()).String())
			tn.agentLog.wait(`link #\d+ to ` + relay + ` failed: .*idle link pool is full; retry 3 in`)
			if got := tn.agentLog.count(`link #\d+ to .* failed: .*; not retried: more links than the pool size`); got != 1 {
				t.Errorf("%d links beyond --pool failed and were dropped, want 1 (the burst's one)\n%s", got, tn.agentLog)
			}
			retrying := map[string]bool{}
			for _, m := range regexp.MustCompile(`link #(\d+) to \S+ failed: .*; retry (\d+) in`).FindAllStringSubmatch(tn.agentLog.String(), -1) {
				retrying[m[1]] = true
			}
			if len(retrying) != 1 {
				t.Errorf("links %v retried, want one (the --pool link's slot alone)\n%s", retrying, tn.agentLog)
			}
			if got := tn.agentLog.count(`link #[4-9]\d* `); got != 0 {
				t.Errorf("links beyond #3 (the taken one, its replacement, one beyond --pool): %d lines\n%s", got, tn.agentLog)
			}
		})
	}
}

// farDial connects a TLS link to the relay after wait, as to a relay that far away: the
// links that replace those a burst took then come up after the burst's short sessions
// ended, as over a network.
func farDial(wait time.Duration) func(ctx context.Context, ep endpoint.Endpoint) (*net.TCPConn, error) {
	d := &endpoint.Dialer{KeepAlive: -1}
	return func(ctx context.Context, ep endpoint.Endpoint) (*net.TCPConn, error) {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return d.Dial(ctx, ep)
	}
}

// TestTLSBurstSettles: a burst of --pool 96 clients at once through TLS links, with
// listentwo's --max-links 100 (the churn probe's 257 and 264, scaled down) and a relay
// 100 ms away (farDial), on both loopbacks. Every idle link is taken and each take opens a
// replacement, 32 at a time; the burst's sessions end and their links come back while
// most replacements still wait their turn or connect: more links than --max-links, so
// listentwo refuses some ("idle link pool is full") and closes some that come back. That
// must be the end of it, since the relay holds enough links: within 2 s of the burst's
// end connecttwo opens no link and has none waiting to be retried, both pools get back to
// --pool, and no more links were refused or opened after the burst than were being
// opened at once (maxOpening), nor twice that in all. Before, each slot whose replacement was
// refused held its place and retried with the backoff of a failing relay (0.5 s doubling
// to 30 s), getting in only as links were trimmed: a churn of refused TLS handshakes
// for 15-20 s after a burst of 257.
func TestTLSBurstSettles(t *testing.T) {
	const pool = 96
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			srv := newTLSServer(t)
			var tn tunnel
			startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: pool + 4}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin),
				Dial: farDial(100 * time.Millisecond), idleTrim: 3 * time.Second}, &tn)
			tn.waitPools(t, pool, pool)
			refused := func() uint64 { return tn.relay.Stats().HandshakesRefused["pool_full"] }
			up := func() uint64 { return tn.agent.Stats().LinksUp }
			upBefore := up()
			conns := make([]*net.TCPConn, pool)
			for i := range conns {
				conns[i] = dial(t, tn.clients)
			}
			errs := make(chan error, pool)
			for i, c := range conns {
				go func() {
					_, err := roundTrip(c, 16<<10+i*7919, 0)
					errs <- err
				}()
			}
			for i := range pool {
				if err := <-errs; err != nil {
					t.Fatalf("client %d of the burst: %v", i+1, err)
				}
			}
			end, refusedAtEnd, upAtEnd := time.Now(), refused(), up()
			// The slots' places among the --pool links idle or being opened.
			claims := func() int {
				g := tn.agent.idle
				g.mu.Lock()
				defer g.mu.Unlock()
				return g.claims
			}
			const quiet = 2 * time.Second
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for claims() != 0 || tn.agent.Stats().Connecting != 0 {
				if time.Since(end) > quiet {
					t.Fatalf("%v after the burst's end connecttwo still has %d links being opened or waiting to be retried (%d connecting), with %d idle (--pool %d) and %d idle on listentwo (--max-links %d); listentwo refused %d links as its pool was full, %d after the burst's end; %d links up since the burst's end",
						quiet, claims(), tn.agent.Stats().Connecting, tn.agent.IdleLinks(), pool, tn.relay.IdleLinks(), pool+4,
						refused(), refused()-refusedAtEnd, up()-upAtEnd)
				}
				<-tick.C
			}
			quietAt := time.Since(end)
			tn.waitPools(t, pool, pool)
			n, opened, after := refused(), up()-upBefore, up()-upAtEnd
			t.Logf("quiet %v after the burst's end, both pools at --pool %v after it: %d links refused as the pool was full (%d after the end), %d links up for the burst (%d after the end); connecttwo logged %d links closed by listentwo",
				quietAt.Round(time.Millisecond), time.Since(end).Round(time.Millisecond), n, n-refusedAtEnd, opened, after, tn.agentLog.count(`down .*: closed by listentwo`))
			if n-refusedAtEnd > maxOpening || after > maxOpening || n > 2*maxOpening {
				t.Errorf("%d links refused as the pool was full, %d of them after the burst's end, and %d links up after it: want at most %d after the end (the links opened at once) and %d in all",
					n, n-refusedAtEnd, after, maxOpening, 2*maxOpening)
			}
		})
	}
}
