package main

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestStopsDuringTLSHandshakes: SIGTERM ends connecttwo --tls-pin within a second, with
// status 0, while its links wait in TLS handshakes with a relay that accepts, reads the
// ClientHellos and never answers (over IPv6 loopback).
func TestStopsDuringTLSHandshakes(t *testing.T) {
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	relay := testkit.StartBackend(t, "[::1]:0", func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	pin := "sha256/" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	p := testkit.Start(t, bins["connecttwo"], "-s", relay.Addr(), "-d", svc.Addr(), "--pool", "16", "--tls-pin", pin)
	testkit.WaitUntil(t, testkit.Timeout, "16 links in their handshakes", func() bool { return relay.Accepts.Load() >= 16 })
	took := p.Stop(t, syscall.SIGTERM, 5*time.Second)
	t.Logf("stopped after %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("connecttwo took %v to stop with TLS handshakes under way, want at most 1s", took)
	}
}
