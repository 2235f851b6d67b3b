package main

import (
	"errors"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
	"shd-tcp-tools/test/netns/nstest"
)

// TestAttackFirstLookupSilent: connecttwo serves service.example in a network namespace
// whose resolver (run by the test; resolv.conf gives up on it after 1 s) does not answer
// from the start, so there is no earlier answer to fall back on. A client that comes
// meanwhile must be reset (never a clean close, which looks like a service that said
// nothing, and never left hanging), within a few seconds; once the resolver answers, the
// next clients are served (16 KiB each way, by SHA-256) within 10 s. (The links opened
// during the silence carry its failure: a client that takes one within a second of it is
// reset too, as the lookup is made again only for a link taken more than a second after
// it; this test allows for that.)
func TestAttackFirstLookupSilent(t *testing.T) {
	bins := tunneltest.Build(t)
	ns := nstest.New(t)
	dns := nstest.ServeDNS(t, ns.ListenUDP(t, "127.0.0.1:53"), true,
		map[string]netip.Addr{"service.example.": netip.MustParseAddr("127.0.0.1")})
	ns.ResolvConf(t, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
	svc := testkit.Serve(t, ns.Listen(t, "127.0.0.1:0"), testkit.Echo)
	const links, clients = "127.0.0.1:7002", "127.0.0.1:7001" // the namespace's own ports
	relay := testkit.Start(t, "ip", "netns", "exec", ns.Name, bins["listentwo"], "-s", clients, "-d", links, "--hello-dst")
	relay.WaitLog(t, `listening for clients`, 1, testkit.Timeout)
	agent := testkit.Start(t, "ip", "netns", "exec", ns.Name, bins["connecttwo"], "-s", links,
		"-d", "service.example:"+strconv.Itoa(svc.Port()), "--hello-from-src", "--pool", "2")

	start := time.Now()
	c, err := ns.Dial(clients, testkit.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(make([]byte, 16))
	took := time.Since(start)
	t.Logf("a client while the resolver never answered: read %d, %v after %v", n, err, took.Round(time.Millisecond))
	if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a client while the resolver never answered: read %d bytes, %v; want a reset", n, err)
	} else if took > 5*time.Second {
		t.Errorf("a client while the resolver never answered was reset after %v, want within 5s (the lookup gives up after 1s)", took)
	}
	agent.WaitLog(t, `failed #\d+ .* lookup service\.example`, 1, testkit.Timeout)

	dns.Silence(false)
	served := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := uint64(0); served < 3 && time.Now().Before(deadline); i++ {
		if _, err := throughIn(ns, clients, i, 16<<10, 3*time.Second); err != nil {
			t.Logf("client %d after the resolver answered again: %v", i, err)
			continue
		}
		served++
	}
	if served < 3 {
		t.Errorf("%d clients served within 10s of the resolver answering, want 3; dns: %s", served, dns)
	}
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
}
