package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestPoolBound: a --pool past the documented maximum is a usage error, one line, exit 2,
// before any connection is made.
func TestPoolBound(t *testing.T) {
	bins := tunneltest.Build(t)
	relay := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	for _, n := range []string{"1025", "20000000", "99999999999"} {
		p := testkit.Start(t, bins["connecttwo"], "-s", relay.Addr(), "-d", "127.0.0.1:9", "--pool", n)
		code, _ := p.Exit(t, 2*time.Second)
		out := p.Log.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "connecttwo: --pool "+n+": at most 1024") {
			t.Errorf("--pool %s: exit %d, stderr %q; want exit 2 and one line 'connecttwo: --pool %s: at most 1024...'", n, code, out, n)
		}
	}
	if n := relay.Accepts.Load(); n != 0 {
		t.Errorf("the relay saw %d connections from rejected command lines", n)
	}
}

// TestStopsWithinASecond: SIGTERM or SIGINT ends connecttwo with status 0 within a second
// in every phase: connecting to a relay that never completes a connect, in the handshake
// with a relay that accepts and never answers (the largest pool, while it opens), in a
// backoff sleep, and while relaying a client.
func TestStopsWithinASecond(t *testing.T) {
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	stop := func(t *testing.T, p *testkit.Proc, sig syscall.Signal) {
		t.Helper()
		took := p.Stop(t, sig, 5*time.Second)
		t.Logf("stopped %v after %v", sig, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("connecttwo took %v to stop after %v, want at most 1s", took, sig)
		}
	}

	t.Run("handshake with a silent relay", func(t *testing.T) {
		relay := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
		p := testkit.Start(t, bins["connecttwo"], "-s", relay.Addr(), "-d", svc.Addr(), "--pool", "1024")
		p.WaitLog(t, `keeping 1024 links open`, 1, testkit.Timeout)
		testkit.WaitUntil(t, testkit.Timeout, "the first links", func() bool { return relay.Accepts.Load() >= 16 })
		// Links are opened at most 32 at a time: a relay that does not answer sees no
		// more than that many while their handshakes wait (5 s), not the whole pool.
		window := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(window) {
			if n := relay.Accepts.Load(); n > 32 {
				t.Fatalf("the silent relay got %d connections at once from --pool 1024, want at most 32", n)
			}
			time.Sleep(5 * time.Millisecond) // observing for the window, not waiting for an event
		}
		stop(t, p, syscall.SIGTERM)
		t.Logf("the relay had accepted %d links", relay.Accepts.Load())
	})

	t.Run("connect to a relay that never accepts", func(t *testing.T) {
		addr := testkit.Blackhole(t)
		p := testkit.Start(t, bins["connecttwo"], "-s", addr, "-d", svc.Addr(), "--pool", "4")
		p.WaitLog(t, `keeping 4 links open`, 1, testkit.Timeout)
		// Each link is a socket waiting for its connect to complete.
		testkit.WaitUntil(t, testkit.Timeout, "connects under way", func() bool { return p.Sockets(t) >= 4 })
		stop(t, p, syscall.SIGTERM)
	})

	t.Run("backoff", func(t *testing.T) {
		addr := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1")) // nothing listens there
		p := testkit.Start(t, bins["connecttwo"], "-s", addr, "-d", svc.Addr(), "--pool", "2")
		p.Log.WaitFor(t, `connection refused; retry 2 in`, 1, testkit.Timeout)
		stop(t, p, syscall.SIGINT)
	})

	t.Run("relaying", func(t *testing.T) {
		bin := bins["listentwo"]
		clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
		links := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
		relay := testkit.Start(t, bin, "-s", clients, "-d", links)
		relay.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)
		p := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--pool", "2")
		relay.Log.WaitFor(t, `link #\d+ up `, 2, testkit.Timeout)
		c := testkit.Dial(t, clients)
		testkit.RoundTrip(t, c, 1, 100<<10) // the connection stays open through the stop
		stop(t, p, syscall.SIGTERM)
		relay.Stop(t, syscall.SIGTERM, 5*time.Second)
	})
}

// SIGHUP makes connecttwo reread --secret-file and go on: an agent whose secret the relay
// refuses is accepted once the file holds the relay's secret and connecttwo was told to
// reread it, and then serves clients.
func TestSIGHUPRereadsSecret(t *testing.T) {
	t.Parallel()
	clients := testkit.Listen(t, "127.0.0.1:0")
	links := testkit.Listen(t, "[::1]:0")
	relayLog := testkit.NewLogBuf()
	r, err := tunnel.NewRelay(tunnel.RelayConfig{
		Clients: addrEndpoint(clients), Links: addrEndpoint(links),
		Secret: []byte("new secret"), Wait: 10 * time.Second, Log: connlog.New(relayLog),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = r.Serve(ctx, clients, links) }()
	t.Cleanup(func() { cancel(); <-served })
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)

	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("old secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testkit.Start(t, "connecttwo", "-s", links.Addr().String(), "-d", svc.Addr(), "--pool", "1", "--secret-file", secret)
	log := p.Log
	relayLog.WaitFor(t, `link #\d+ refused \S+: .*authentication failed`, 1, 10*time.Second)

	if err := os.WriteFile(secret, []byte("new secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(t, syscall.SIGHUP)
	log.WaitFor(t, `reread secret file `+secret+`: links must prove the new secret from now on$`, 1, 10*time.Second)
	wait, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := r.WaitIdle(wait, 1); err != nil {
		t.Fatalf("no link with the new secret: %v\n%s", err, log.String())
	}
	c := testkit.Dial(t, clients.Addr().String())
	testkit.RoundTrip(t, c, 1, 100000)
	c.Close()

	p.Stop(t, syscall.SIGTERM, 10*time.Second)
}

// addrEndpoint returns ln's address as an endpoint.
func addrEndpoint(ln *net.TCPListener) endpoint.Endpoint {
	a := ln.Addr().(*net.TCPAddr)
	return endpoint.Endpoint{Host: a.IP.String(), Port: a.Port}
}
