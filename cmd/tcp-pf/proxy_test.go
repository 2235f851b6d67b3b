package main

import (
	"bufio"
	"net"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"shd-tcp-tools/internal/forward/fwdtest"
)

// Two tcp-pf processes in a row, as two tiers of proxies: the front one sends a version 2
// header, the back one accepts it and sends a version 1 header on. The destination sees the
// original client, over IPv6, and the back one logs it as its client.
func TestProxyChain(t *testing.T) {
	t.Parallel()
	type seen struct {
		h   *proxyproto.Header
		d   fwdtest.Digest
		err error
	}
	got := make(chan seen, 1)
	be := fwdtest.StartBackend(t, "[::1]:0", func(c *net.TCPConn) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			got <- seen{err: err}
			return
		}
		d, err := fwdtest.Receive(r)
		got <- seen{h, d, err}
	})
	back := startPF(t, "::1", "", "-d", be.Addr(), "--accept-proxy", "--accept-proxy-timeout", "2", "--send-proxy", "-a", "::1")
	front := startPF(t, "::1", "", "-d", back.addr, "--send-proxy-v2")
	c := fwdtest.Dial(t, front.addr)
	sent, err := fwdtest.Send(c, 6, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	var s seen
	select {
	case s = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the destination got nothing within 10s")
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	if s.h.Version != 1 || s.h.SourceAddr.String() != c.LocalAddr().String() || s.h.DestinationAddr.String() != front.addr {
		t.Errorf("destination's header: v%d %v -> %v, want v1 %v -> %v", s.h.Version, s.h.SourceAddr, s.h.DestinationAddr, c.LocalAddr(), front.addr)
	}
	if s.d != sent {
		t.Errorf("destination got %v after the header, want %v", s.d, sent)
	}
	client := regexp.QuoteMeta(c.LocalAddr().String())
	back.log.WaitFor(t, `close #1 `+client+` -> .* up=1048576 `, 1, 5*time.Second)
	front.log.WaitFor(t, `close #1 `+client+` -> .* up=1048576 `, 1, 5*time.Second)
	front.stop(t, syscall.SIGTERM, 10*time.Second)
	back.stop(t, syscall.SIGTERM, 10*time.Second)
}
