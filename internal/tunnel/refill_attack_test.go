package tunnel

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
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
	serveRelay(t, cfg, tn, clients.(*net.TCPListener), links.(*net.TCPListener))
}

// claimsNow is the agent's count of slots' places among the --pool links idle or opening.
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

// echoRe is roundTrip's error for an echo that differs from what was sent.
var echoRe = regexp.MustCompile(`echo: got (\d+) bytes sha`)

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
					size := 32<<10 + i*7919
					_, err = roundTrip(c.(*net.TCPConn), size, 0)
					c.Close()
					if m := echoRe.FindStringSubmatch(fmt.Sprint(err)); m != nil {
						if got, _ := strconv.Atoi(m[1]); got >= size {
							t.Errorf("client %d: its bytes came back changed (not cut short): %v", i+1, err)
						}
					}
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

// startTLSPool starts an echo service, a TLS relay with --max-links pool+2 and an agent
// with --pool pool (backoff 20 ms doubling to 200 ms) on host, and waits until both ends
// hold exactly pool idle links. With through, the agent's links go to the address it
// returns for the relay's (a middlebox's). It returns the relay's config, for restartRelay.
func startTLSPool(t *testing.T, host string, pool int, tn *tunnel, through func(relay net.Addr) net.Addr) RelayConfig {
	t.Helper()
	svc := startService(t, host, echoMode)
	srv := newTLSServer(t)
	rc := RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: pool + 2}
	startRelay(t, host, rc, tn)
	ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin),
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	if through != nil {
		ac.Relay = epOf(t, through(tn.links.Addr()))
	}
	startAgent(t, ac, tn)
	tn.settled(t, pool, testTimeout)
	return rc
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
			var tn tunnel
			rc := startTLSPool(t, host, pool, &tn, nil)
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
			var tn tunnel
			rc := startTLSPool(t, host, pool, &tn, nil)
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

// killProxy sits between connecttwo and listentwo's link port, as a middlebox would, and
// can kill the links that cross it: both of a link's connections closed, or reset.
type killProxy struct {
	ln    *net.TCPListener
	mu    sync.Mutex
	pairs [][2]*net.TCPConn // the links open now, oldest first
	wg    sync.WaitGroup
}

func startKillProxy(t *testing.T, host string, target net.Addr) *killProxy {
	t.Helper()
	p := &killProxy{ln: listen(t, host)}
	t.Cleanup(func() {
		p.ln.Close()
		p.kill(-1, false)
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			a, err := p.ln.AcceptTCP()
			if err != nil {
				return
			}
			b, err := net.DialTimeout("tcp", target.String(), testTimeout)
			if err != nil {
				a.Close()
				continue
			}
			pair := [2]*net.TCPConn{a, b.(*net.TCPConn)}
			p.mu.Lock()
			p.pairs = append(p.pairs, pair)
			p.mu.Unlock()
			var ended sync.WaitGroup
			ended.Add(2)
			p.wg.Add(3)
			for i := range 2 {
				go func() {
					defer p.wg.Done()
					defer ended.Done()
					_, _ = pair[i].ReadFrom(pair[1-i])
					_ = pair[i].CloseWrite()
				}()
			}
			go func() { // forget the pair once both ways ended
				defer p.wg.Done()
				ended.Wait()
				p.forget(pair)
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}()
	return p
}

// forget takes pair off the links open now.
func (p *killProxy) forget(pair [2]*net.TCPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pairs = slices.DeleteFunc(p.pairs, func(q [2]*net.TCPConn) bool { return q == pair })
}

// open returns how many links cross the proxy now.
func (p *killProxy) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// kill ends the k oldest links crossing the proxy (all with k < 0): each of its two
// connections is closed, or reset (a RST both ways) with reset.
func (p *killProxy) kill(k int, reset bool) int { return p.killSome(k, reset, false) }

// killSome is kill of the k newest links with newest.
func (p *killProxy) killSome(k int, reset, newest bool) int {
	p.mu.Lock()
	if k < 0 || k > len(p.pairs) {
		k = len(p.pairs)
	}
	var victims [][2]*net.TCPConn
	if newest {
		victims = slices.Clone(p.pairs[len(p.pairs)-k:])
		p.pairs = p.pairs[:len(p.pairs)-k]
	} else {
		victims = slices.Clone(p.pairs[:k])
		p.pairs = p.pairs[k:]
	}
	p.mu.Unlock()
	for _, pair := range victims {
		for _, c := range pair {
			if reset {
				_ = c.SetLinger(0)
			}
			c.Close()
		}
	}
	return len(victims)
}

// TestAttackTLSPoolRefillsWhenRoomFreed: a second connecttwo holds listentwo's room
// (--max-links) when the first starts, so listentwo refuses the first one's TLS links
// ("idle link pool is full") while it has fewer than --pool idle: its slots keep their
// places and retry with their backoff (20 ms doubling, at most 200 ms). Once the second
// agent stops, the first fills its --pool 4 within a second, on both ends, with nothing
// left being opened or retried; with room for 2 of its links (--max-links 6) it held 2 and
// fills the other 2 the same way. IPv4 and IPv6.
func TestAttackTLSPoolRefillsWhenRoomFreed(t *testing.T) {
	const pool = 4
	for _, tc := range []struct {
		host     string
		maxLinks int
	}{{"127.0.0.1", pool}, {"::1", pool}, {"127.0.0.1", pool + 2}} {
		t.Run(fmt.Sprintf("%s max-links %d", tc.host, tc.maxLinks), func(t *testing.T) {
			svc := startService(t, tc.host, echoMode)
			srv := newTLSServer(t)
			var tn tunnel
			startRelay(t, tc.host, RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: tc.maxLinks}, &tn)
			ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
			other := tunnel{relay: tn.relay, clients: tn.clients, links: tn.links, relayLog: tn.relayLog}
			startAgent(t, ac, &other)
			if err := other.agent.WaitIdle(ctxT(t), pool); err != nil {
				t.Fatalf("the second agent never had --pool %d idle: %v", pool, err)
			}
			startAgent(t, ac, &tn)
			held := tc.maxLinks - pool
			// Each of the first agent's slots beyond the room refused twice: its backoff grew.
			tn.agentLog.waitCount(`idle link pool is full; retry 2 in`, pool-held)
			if got := tn.agent.IdleLinks(); got != held {
				t.Fatalf("the first agent has %d idle with room for %d", got, held)
			}
			other.stopAgent()
			waitDone(t, "the second Agent.Run", other.agentDone)
			took := tn.settled(t, pool, time.Second)
			refused := tn.relay.Stats().HandshakesRefused["pool_full"]
			t.Logf("room freed: the first agent at --pool %d on both ends %v later; listentwo refused %d links as its pool was full", pool, took.Round(time.Millisecond), refused)
			if n := tn.agentLog.count(`not retried`); n != 0 {
				t.Errorf("%d links not retried with fewer than --pool idle\n%s", n, tn.agentLog)
			}
			if r := tn.burst(t, 2*pool, 1, nil); r != 0 {
				t.Errorf("%d clients retried", r)
			}
		})
	}
}

// TestAttackTLSIdleLinksKilled: connecttwo's --pool 6 TLS links cross a middlebox
// (killProxy) that kills some while they are idle: 3 closed both ways, then 3 reset both
// ways, then all 6 reset. Each time both ends, and the middlebox, are back at exactly 6
// links within a second, none being opened or retried, and 12 clients are then served
// with their bytes intact. IPv4 and IPv6.
func TestAttackTLSIdleLinksKilled(t *testing.T) {
	const pool = 6
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			var tn tunnel
			var px *killProxy
			startTLSPool(t, host, pool, &tn, func(relay net.Addr) net.Addr {
				px = startKillProxy(t, host, relay)
				return px.ln.Addr()
			})
			for _, k := range []struct {
				n     int
				reset bool
			}{{3, false}, {3, true}, {pool, true}} {
				agentUp, relayUp := tn.agent.Stats().LinksUp, tn.relay.Stats().LinksUp
				if got := px.kill(k.n, k.reset); got != k.n {
					t.Fatalf("killed %d links, want %d", got, k.n)
				}
				start := time.Now()
				// The kills seen: as many links up again on both ends as were killed.
				testkit.WaitUntil(t, time.Second, "the killed links' replacements up", func() bool {
					return tn.agent.Stats().LinksUp >= agentUp+uint64(k.n) && tn.relay.Stats().LinksUp >= relayUp+uint64(k.n)
				})
				tn.settled(t, pool, time.Second)
				took := time.Since(start)
				testkit.WaitUntil(t, time.Second, "the middlebox to carry --pool links", func() bool { return px.open() == pool })
				t.Logf("%d idle links killed (reset %v): both ends at --pool %d after %v", k.n, k.reset, pool, took.Round(time.Millisecond))
			}
			if r := tn.burst(t, 2*pool, 1, nil); r != 0 {
				t.Errorf("%d clients retried", r)
			}
			tn.settled(t, pool, 2*time.Second)
		})
	}
}

// TestAttackTLSBurstWhileLinksDie: a burst of 18 clients through --pool 6 TLS links
// (--max-links 8) while a middlebox kills a link every 10 ms, 12 in all, reset or closed,
// idle or taken. A client whose link was killed sees its connection end, never its bytes
// changed, and is served on a later try (4 in all); afterwards both ends and the middlebox
// settle at exactly --pool 6 within 2 s. IPv4 and IPv6.
func TestAttackTLSBurstWhileLinksDie(t *testing.T) {
	const pool, clients, kills = 6, 18, 12
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			var tn tunnel
			var px *killProxy
			startTLSPool(t, host, pool, &tn, func(relay net.Addr) net.Addr {
				px = startKillProxy(t, host, relay)
				return px.ln.Addr()
			})
			killed := 0
			retried := tn.burst(t, clients, 4, func() {
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for i := range kills {
					killed += px.kill(1, i%2 == 0)
					<-tick.C
				}
			})
			took := tn.settled(t, pool, 2*time.Second)
			testkit.WaitUntil(t, time.Second, "the middlebox to carry --pool links", func() bool { return px.open() == pool })
			t.Logf("%d links killed in a burst of %d: %d clients served on a later try; both ends at --pool %d %v after the burst; %d links up in all",
				killed, clients, retried, pool, took.Round(time.Millisecond), tn.agent.Stats().LinksUp)
		})
	}
}

// TestAttackTLSLinksKilledBeyondPool: after a burst of 12 clients through --pool 6 TLS
// links, the links that came back from their sessions wait idle beyond --pool (trimmed
// after idleTrim, 3 s here), and then the newest 6 idle links are reset by a middlebox:
// the slots' own replacements, whose slots see more than --pool idle without them and
// end. The links left, and the refill, must still make exactly --pool 6 on both ends once
// the extra links are trimmed, and then serve 12 clients; and the same with the oldest 6
// killed (the links that came back). IPv4.
func TestAttackTLSLinksKilledBeyondPool(t *testing.T) {
	const pool = 6
	for _, newest := range []bool{true, false} {
		t.Run(fmt.Sprintf("newest %v", newest), func(t *testing.T) {
			host := "127.0.0.1"
			svc := startService(t, host, echoMode)
			srv := newTLSServer(t)
			var tn tunnel
			startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: 3 * pool}, &tn)
			px := startKillProxy(t, host, tn.links.Addr())
			startAgent(t, AgentConfig{Relay: epOf(t, px.ln.Addr()), Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, idleTrim: 3 * time.Second}, &tn)
			tn.settled(t, pool, testTimeout)
			if r := tn.burst(t, 2*pool, 1, nil); r != 0 {
				t.Errorf("%d clients retried", r)
			}
			testkit.WaitUntil(t, time.Second, "the burst's links back idle beyond --pool", func() bool {
				return tn.agent.IdleLinks() > pool && tn.agent.Stats().Busy == 0 && tn.agent.Stats().Connecting == 0
			})
			idleBefore, downBefore := tn.agent.IdleLinks(), tn.agentLog.count(`link #\d+ down`)
			killed := px.killSome(pool, true, newest)
			start := time.Now()
			tn.agentLog.waitCount(`link #\d+ down`, downBefore+killed) // the kills seen
			tn.settled(t, pool, 5*time.Second)
			t.Logf("%d idle of %d reset (newest %v): both ends at --pool %d %v later", killed, idleBefore, newest, pool, time.Since(start).Round(time.Millisecond))
			if r := tn.burst(t, 2*pool, 1, nil); r != 0 {
				t.Errorf("%d clients retried", r)
			}
		})
	}
}
