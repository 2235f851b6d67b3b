package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"shd-tcp-tools/internal/tlslink"
)

// TestAttackTrickleRelay: a hostile relay on the link port accepts every link of a
// --pool 16 agent and trickles its greeting a byte every 20 ms (a whole greeting would
// take 2 s), then waits; with TLS links, it trickles its TLS flight so (its records
// would take half a minute). Each link must be cut at its handshake timeout (300 ms here),
// backed off (at most RefusedMax: a cut link) and retried (the failures counted; the log
// writes 10 of them and sums up the rest): over 1.5 s at most 32 links
// are open at the relay at once (the agent's places for links being opened), the agent's
// goroutines and descriptors do not grow from 0.75 s to 1.5 s into the attack, and every
// slot has failed at least once. Then a real relay takes over the port: the 16 links come
// up within 3 s and a client is served (64 KiB each way, by SHA-256); once the agent and
// the relay stop, the goroutines are back where they were. IPv4 and IPv6 loopback.
func TestAttackTrickleRelay(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
	}{{"127.0.0.1", false}, {"::1", false}, {"127.0.0.1", true}, {"::1", true}} {
		host := tc.host
		name := host
		var srv *tlslink.Server
		if tc.tls {
			name += " TLS"
			srv = newTLSServer(t)
		}
		t.Run(name, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			base := runtime.NumGoroutine()
			var open, maxOpen atomic.Int64
			ln, accepts := linkPort(t, host, func(c *net.TCPConn) {
				n := open.Add(1)
				defer open.Add(-1)
				for m := maxOpen.Load(); n > m && !maxOpen.CompareAndSwap(m, n); m = maxOpen.Load() {
				}
				if srv != nil {
					_ = tls.Server(trickleConn{c}, srv.Config()).Handshake()
					return
				}
				if !readOpening(c) {
					return
				}
				var g offer
				_, _ = rand.Read(g.nonce[:])
				for _, b := range []byte(g.text() + "\n") {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond) // the trickle itself, not a wait for the test
				}
				_, _ = io.Copy(io.Discard, c)
			})
			addr := ln.Addr().String()
			tn := &tunnel{}
			ac := AgentConfig{
				Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 16,
				HandshakeTimeout: 300 * time.Millisecond, BackoffBase: 20 * time.Millisecond,
				BackoffMax: 200 * time.Millisecond, RefusedMax: 100 * time.Millisecond,
			}
			rc := RelayConfig{}
			if srv != nil {
				ac.TLS, rc.TLS = pinned(t, srv.Pin), srv
			}
			startAgent(t, ac, tn)
			start := time.Now()
			for time.Since(start) < 750*time.Millisecond {
				time.Sleep(10 * time.Millisecond) // the attack runs for its time
			}
			g1, f1 := runtime.NumGoroutine(), fds(t)
			for time.Since(start) < 1500*time.Millisecond {
				time.Sleep(10 * time.Millisecond)
			}
			g2, f2 := runtime.NumGoroutine(), fds(t)
			failed := linkFailures(tn.agent) // logged up to 10 in 10 s, then summed up
			t.Logf("in 1.5s: %d links accepted, at most %d open at once, %d failures; goroutines %d -> %d, descriptors %d -> %d",
				accepts.Load(), maxOpen.Load(), failed, g1, g2, f1, f2)
			if maxOpen.Load() > maxOpening {
				t.Errorf("%d links open at the trickling relay at once, want at most %d", maxOpen.Load(), maxOpening)
			}
			if failed < 16 {
				t.Errorf("%d link failures in 1.5s, want every one of the 16 slots cut at its 300ms timeout", failed)
			}
			// The relay's own handlers are goroutines too: at most maxOpening of each.
			if g2 > g1+2*maxOpening || f2 > f1+2*maxOpening {
				t.Errorf("goroutines %d -> %d, descriptors %d -> %d between 0.75s and 1.5s: they grow", g1, g2, f1, f2)
			}

			// A real relay takes the port over.
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
			tn.clients, tn.links = listen(t, host), links
			tn.relayLog = newSink(t, "listentwo")
			rc.Clients, rc.Links, rc.Log = epOf(t, tn.clients.Addr()), epOf(t, links.Addr()), tn.relayLog.logger()
			r, err := NewRelay(rc)
			if err != nil {
				t.Fatal(err)
			}
			tn.relay = r
			ctx, stopRelay := context.WithCancel(context.Background())
			relayDone := make(chan struct{})
			go func() { _ = r.Serve(ctx, tn.clients, links); close(relayDone) }()
			took := time.Now()
			waitCtx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
			defer cancel()
			if err := r.WaitIdle(waitCtx, 16); err != nil {
				t.Fatalf("the real relay has %d of the 16 links 3s after it took the port over:\n%s", r.IdleLinks(), tn.agentLog)
			}
			t.Logf("16 links up %v after the real relay took the port over", time.Since(took).Round(time.Millisecond))
			c := dial(t, tn.clients)
			if _, err := roundTrip(c, 64<<10, 0); err != nil {
				t.Errorf("a client through the real relay: %v", err)
			}
			c.Close()
			tn.stopAgent()
			waitDone(t, "Agent.Run", tn.agentDone)
			stopRelay()
			waitDone(t, "Relay.Serve", relayDone)
			deadline := time.Now().Add(testTimeout)
			for runtime.NumGoroutine() > base+4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // a poll, with a deadline
			}
			if n := runtime.NumGoroutine(); n > base+4 {
				t.Errorf("%d goroutines after the agent and the relay stopped, %d before the attack", n, base)
			}
		})
	}
}

// trickleConn writes what it is given a byte every 20 ms.
type trickleConn struct{ *net.TCPConn }

func (c trickleConn) Write(b []byte) (int, error) {
	for i := range b {
		if _, err := c.TCPConn.Write(b[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(20 * time.Millisecond) // the trickle itself
	}
	return len(b), nil
}

// fds is how many descriptors this process has open.
func fds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
