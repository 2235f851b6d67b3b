package main

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/metrics/metricstest"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackTLSHandshakePressure: one stranger, from the agents' own address (IPv4) or
// from ::1 (IPv6; listentwo's -d then on [::]), keeps connections open on the TLS link
// port, reopened as listentwo closes them: 450 that send nothing or half of a
// ClientHello (the relay waits for the rest), or 330 that complete TLS and then never
// send the opening inside it. During that, a connecttwo --tls-pin started in the middle
// must have its two links up within 3 s (the room pushes out the least advanced guest,
// the oldest of the busiest source first, and an agent's handshake on loopback takes
// milliseconds), and 5 clients must be served (64 KiB each way, by SHA-256) with their
// first byte back within 3 s (a link pushed out in its handshake is retried within 1 s,
// and a client waits on listentwo for the next); listentwo must hold at most 310
// descriptors (the room's 256 guests, links, listeners, loops, metrics: 277 measured)
// and 700 goroutines (one per TLS guest, the pool's watchers). A room without its bound
// held 471 and 321 descriptors here.
func TestAttackTLSHandshakePressure(t *testing.T) {
	bins := tunneltest.Build(t)
	key := filepath.Join(t.TempDir(), "relay.key")
	pin := printPin(t, bins["listentwo"], key)
	hello := clientHello(t)
	for _, tc := range []struct {
		name, from string
		send       []byte // what each stranger sends; nil with tls
		tls        bool   // complete TLS, then silence
	}{
		{"silent from 127.0.0.1", "127.0.0.1", nil, false},
		{"half a ClientHello from 127.0.0.1", "127.0.0.1", hello[:len(hello)/2], false},
		{"half a ClientHello from ::1", "::1", hello[:len(hello)/2], false},
		{"TLS then silence from 127.0.0.1", "127.0.0.1", nil, true},
		{"TLS then silence from ::1", "::1", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
			metricsAt := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
			clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
			port := strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
			relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", port, "--tls-key", key, "--hello-dst", "--wait", "5", "--metrics", metricsAt)
			relay.WaitLog(t, `listening for clients`, 1, testkit.Timeout)
			links, target := "127.0.0.1:"+port, net.JoinHostPort(tc.from, port)

			var flood *tunneltest.Flood
			held := new(atomic.Int64)
			stop := func() {}
			if tc.tls {
				held, stop = tlsStrangers(t, tc.from, target, 330)
				testkit.WaitUntil(t, testkit.Timeout, "strangers past TLS", func() bool { return held.Load() >= 200 })
			} else {
				flood = tunneltest.StartFlood(t, tc.from, target, 450, 50000, tc.send)
				flood.WaitHeld(t, 300)
			}
			start := time.Now()
			agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src", "--pool", "2", "--tls-pin", pin)
			agent.WaitLog(t, `link #\d+ up `, 2, testkit.Timeout)
			joined := time.Since(start)
			var slowest time.Duration
			for i := range 5 {
				slowest = max(slowest, clientThrough(t, "127.0.0.1", clients, uint64(i), 64<<10))
			}
			fds := relay.FDs(t)
			goroutines := metricstest.Get(t, metricsAt).Get(t, "go_goroutines")
			if flood != nil {
				t.Logf("%d connects, at most %d open at once", flood.Dials.Load(), flood.MaxHeld.Load())
				flood.Stop()
			} else {
				t.Logf("%d strangers past TLS open at the end", held.Load())
				stop()
			}
			t.Logf("agent's links up in %v; slowest first byte %v; listentwo held %d descriptors, %.0f goroutines",
				joined.Round(time.Millisecond), slowest.Round(time.Millisecond), fds, goroutines)
			if joined > 3*time.Second {
				t.Errorf("connecttwo's links up after %v under the strangers, want within 3s", joined)
			}
			if slowest > 3*time.Second {
				t.Errorf("the slowest client's first byte after %v, want within 3s", slowest)
			}
			if fds > 310 {
				t.Errorf("listentwo held %d descriptors, want at most 310", fds)
			}
			if goroutines > 700 {
				t.Errorf("listentwo ran %.0f goroutines, want at most 700", goroutines)
			}
			agent.Stop(t, syscall.SIGTERM, 5*time.Second)
			relay.Stop(t, syscall.SIGTERM, 5*time.Second)
		})
	}
}

// tlsStrangers starts workers that connect from local to addr, complete a TLS 1.3
// handshake (trusting any certificate) and then send nothing, each reconnecting when the
// relay closes it, until the returned stop or the test's end; held counts those past TLS.
func tlsStrangers(t *testing.T, local, addr string, workers int) (held *atomic.Int64, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	held = new(atomic.Int64)
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: testkit.Timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	for range workers {
		wg.Go(func() {
			for dials := 0; ctx.Err() == nil && dials < 5; dials++ {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					continue
				}
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
				after := context.AfterFunc(ctx, func() { c.Close() })
				if tc.HandshakeContext(ctx) == nil {
					held.Add(1)
					var b [512]byte
					for {
						if _, err := tc.Read(b[:]); err != nil {
							break
						}
					}
					held.Add(-1)
				}
				after()
				c.Close()
			}
		})
	}
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return held, stop
}
