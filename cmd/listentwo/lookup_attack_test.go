package main

import (
	"net/netip"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
	"shd-tcp-tools/test/netns/nstest"
)

// TestAttackSignalDuringAllowLookup: listentwo -a client.example in a network namespace
// whose resolver (the test's) never answers waits at start for the name (10 s by
// resolv.conf's defaults). SIGTERM then must end it at once as a stop (status 0, one line
// that says what it was looking up), not as a usage error that calls the name unknown
// ("-a: allow \"client.example\": host not found", status 2).
func TestAttackSignalDuringAllowLookup(t *testing.T) {
	bins := tunneltest.Build(t)
	ns := nstest.New(t)
	dns := ns.Resolver(t, true, map[string]netip.Addr{"client.example.": netip.MustParseAddr("127.0.0.1")}, "")
	p := testkit.Start(t, "ip", "netns", "exec", ns.Name, bins["listentwo"], "-s", "127.0.0.1:7001", "-d", "127.0.0.1:7002", "-a", "client.example")
	testkit.WaitUntil(t, testkit.Timeout, "the lookup of client.example", func() bool { return dns.Count("A client.example.") > 0 })
	p.Signal(t, syscall.SIGTERM)
	code, took := p.Exit(t, 5*time.Second)
	if code != 0 || took > time.Second || p.Log.Count(`^listentwo: stopped before listening: looking up -a client\.example`) != 1 {
		t.Errorf("SIGTERM during the lookup of -a client.example: exit %d after %v, stderr %q; want 0 within 1s, one line that it stopped",
			code, took.Round(time.Millisecond), p.Log.String())
	}
}
