package tunnel

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// restartRelay stops tn's relay and starts a new one with cfg on the same two ports (the
// same TLS key when cfg has one), as listentwo stopped and started again.
func restartRelay(t *testing.T, cfg RelayConfig, tn *tunnel) {
	t.Helper()
	clientsAt, linksAt := tn.clients.Addr().String(), tn.links.Addr().String()
	tn.stopRelay()
	waitDone(t, "Relay.Serve", tn.relayDone)
	var clients, links net.Listener
	testkit.WaitUntil(t, testTimeout, "the relay's ports free again", func() bool {
		var err error
		if clients == nil {
			clients, err = net.Listen("tcp", clientsAt)
		}
		if err == nil && links == nil {
			links, err = net.Listen("tcp", linksAt)
		}
		return err == nil
	})
	t.Cleanup(func() { clients.Close(); links.Close() })
	tn.clients, tn.links = clients.(*net.TCPListener), links.(*net.TCPListener)
	cfg.Clients, cfg.Links = epOf(t, clients.Addr()), epOf(t, links.Addr())
	cfg.Log = tn.relayLog.logger()
	r, err := NewRelay(cfg)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	tn.relay = r
	ctx, cancel := context.WithCancel(context.Background())
	tn.stopRelay = cancel
	done := make(chan struct{})
	tn.relayDone = done
	var serveErr error
	go func() { serveErr = r.Serve(ctx, clients, links); cfg.Log.Drain(); close(done) }()
	t.Cleanup(func() {
		cancel()
		waitDone(t, "Relay.Serve", done)
		if serveErr != nil {
			t.Errorf("Relay.Serve (restarted): %v", serveErr)
		}
	})
}

// claims is the agent's count of slots' places among the --pool links idle or opening.
func (a *Agent) claimsNow() int {
	a.idle.mu.Lock()
	defer a.idle.mu.Unlock()
	return a.idle.claims
}

// settled waits until the agent has exactly pool links idle, none being opened or waiting
// to be retried, and the relay exactly pool idle too, within d; it fails with both counts.
func (tn *tunnel) settled(t *testing.T, pool int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !(tn.agent.IdleLinks() == pool && tn.relay.IdleLinks() == pool && tn.agent.claimsNow() == 0 && tn.agent.Stats().Connecting == 0) {
		if time.Since(start) > d {
			t.Fatalf("not back at --pool %d within %v: connecttwo %d idle, %d places held, %d connecting; listentwo %d idle\nagent:\n%s\nrelay:\n%s",
				pool, d, tn.agent.IdleLinks(), tn.agent.claimsNow(), tn.agent.Stats().Connecting, tn.relay.IdleLinks(),
				testkit.Tail(tn.agentLog.String(), 40), testkit.Tail(tn.relayLog.String(), 20))
		}
		<-tick.C
	}
	return time.Since(start)
}

// burst runs n clients at once through tn, each a round trip of its own size checked by
// SHA-256; a client whose connection failed (cut by a relay's restart, its link killed)
// tries again, up to tries times in all. It returns the clients that needed more than one
// try, and fails the test when one was never served.
func (tn *tunnel) burst(t *testing.T, n, tries int, during func()) (retried int) {
	t.Helper()
	clientsAt := tn.clients.Addr().String()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, n)
	started := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for try := range tries {
				c, err := net.DialTimeout("tcp", clientsAt, testTimeout)
				if err == nil {
					if try == 0 {
						started <- struct{}{}
					}
					_, err = roundTrip(c.(*net.TCPConn), 32<<10+i*7919, 0)
					c.Close()
				} else if try == 0 {
					started <- struct{}{}
				}
				errs[i] = err
				if err == nil {
					if try > 0 {
						mu.Lock()
						retried++
						mu.Unlock()
					}
					return
				}
				time.Sleep(20 * time.Millisecond) // a client's own pause before it tries again
			}
		}()
	}
	for range n {
		<-started
	}
	if during != nil {
		during()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d of %d not served in %d tries: %v", i+1, n, tries, err)
		}
	}
	return retried
}

// TestAttackTLSRelayRestartIdle: listentwo stops and starts again on the same ports with
// the same key while connecttwo's --pool 6 TLS links are all idle. Every link is lost;
// each slot keeps its place (fewer than --pool are idle without it) and retries, so both
// ends are back at exactly --pool 6 idle within the backoff (20 ms doubling, at most
// 200 ms) and a burst of 12 clients is served, bytes intact, on both loopbacks.
func TestAttackTLSRelayRestartIdle(t *testing.T) {
	const pool = 6
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			srv := newTLSServer(t)
			var tn tunnel
			rc := RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: pool + 2}
			startRelay(t, host, rc, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, &tn)
			tn.settled(t, pool, testTimeout)
			for round := range 2 {
				before := tn.agentLog.count(`not retried`)
				restartRelay(t, rc, &tn)
				took := tn.settled(t, pool, 2*time.Second)
				// The burst's own links beyond --max-links may be refused and not retried
				// (TestTLSBurstSettles); the restart's must all be retried.
				if n := tn.agentLog.count(`not retried`) - before; n != 0 {
					t.Errorf("%d links not retried after restart %d\n%s", n, round+1, tn.agentLog)
				}
				if r := tn.burst(t, 2*pool, 1, nil); r != 0 {
					t.Errorf("%d clients retried", r)
				}
				again := tn.settled(t, pool, 2*time.Second)
				t.Logf("restart %d: both ends at --pool %d after %v, again %v after 12 clients; links up %d",
					round+1, pool, took.Round(time.Millisecond), again.Round(time.Millisecond), tn.agent.Stats().LinksUp)
			}
		})
	}
}

// TestAttackTLSRelayRestartMidBurst: listentwo stops and starts again on the same ports
// while 16 clients (more than --pool 6) go through TLS links. The clients it cut try
// again (at most 4 times in all) and each is served with its bytes intact; afterwards both
// ends settle at exactly --pool 6 idle, none being opened or waiting, within 2 s.
func TestAttackTLSRelayRestartMidBurst(t *testing.T) {
	const pool, clients = 6, 16
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			srv := newTLSServer(t)
			var tn tunnel
			rc := RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: pool + 2}
			startRelay(t, host, rc, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, &tn)
			tn.settled(t, pool, testTimeout)
			for round := range 2 {
				opened := tn.agent.Stats().Conns.Opened
				retried := tn.burst(t, clients, 4, func() {
					// In the middle: --pool clients' sessions opened, the rest waiting.
					testkit.WaitUntil(t, testTimeout, "the burst's first sessions", func() bool {
						return tn.agent.Stats().Conns.Opened >= opened+pool
					})
					restartRelay(t, rc, &tn)
				})
				took := tn.settled(t, pool, 2*time.Second)
				t.Logf("round %d: %d of %d clients served on a second try; both ends at --pool %d %v after the burst",
					round+1, retried, clients, pool, took.Round(time.Millisecond))
			}
		})
	}
}
