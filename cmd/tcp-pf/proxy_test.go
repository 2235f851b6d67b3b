package main

import (
	"regexp"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// Two tcp-pf processes in a row, as two tiers of proxies: the front one sends a version 2
// header, the back one accepts it and sends a version 1 header on. The destination sees the
// original client, over IPv6, and the back one logs it as its client.
func TestProxyChain(t *testing.T) {
	t.Parallel()
	be := testkit.StartProxyBackend(t, "[::1]:0")
	back := startPF(t, "::1", "", "-d", be.Addr(), "--accept-proxy", "--accept-proxy-timeout", "2", "--send-proxy", "-a", "::1")
	front := startPF(t, "::1", "", "-d", back.addr, "--send-proxy-v2")
	c := testkit.Dial(t, front.addr)
	sent, err := testkit.Send(c, 6, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	s := be.Next(t)
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	if s.Header.Version != 1 || s.Header.SourceAddr.String() != c.LocalAddr().String() || s.Header.DestinationAddr.String() != front.addr {
		t.Errorf("destination's header: v%d %v -> %v, want v1 %v -> %v", s.Header.Version, s.Header.SourceAddr, s.Header.DestinationAddr, c.LocalAddr(), front.addr)
	}
	if s.Digest != sent {
		t.Errorf("destination got %v after the header, want %v", s.Digest, sent)
	}
	client := regexp.QuoteMeta(c.LocalAddr().String())
	back.Log.WaitFor(t, `close #1 `+client+` -> .* up=1048576 `, 1, 5*time.Second)
	front.Log.WaitFor(t, `close #1 `+client+` -> .* up=1048576 `, 1, 5*time.Second)
	front.Stop(t, syscall.SIGTERM, 10*time.Second)
	back.Stop(t, syscall.SIGTERM, 10*time.Second)
}
