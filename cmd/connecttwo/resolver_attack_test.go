package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
	"shd-tcp-tools/test/netns/nstest"
)

// throughIn connects from inside ns to addr and moves n bytes of stream seed both ways,
// checked by SHA-256, within d; it returns how long that took.
func throughIn(ns *nstest.NS, addr string, seed uint64, n int64, d time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := ns.Dial(addr, d)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(d))
	sent := make(chan error, 1)
	go func() { _, err := testkit.Send(c, seed, n); sent <- err }()
	got, err := testkit.Receive(io.LimitReader(c, n))
	if serr := <-sent; serr != nil && err == nil {
		err = serr
	}
	if err == nil && got != testkit.Expected(seed, n) {
		err = fmt.Errorf("echo %v, want %v", got, testkit.Expected(seed, n))
	}
	return time.Since(start), err
}

// silentResolverTunnel runs listentwo and connecttwo (--pool 3, towards
// service.example, with extra, such as --tls-pin) in a new network namespace whose
// resolver the test runs and answers for now, serves one client through them, and returns
// the namespace, the resolver, both programs and the clients' address. With tls,
// listentwo has --tls-key and connecttwo its pin.
func silentResolverTunnel(t *testing.T, tls bool) (ns *nstest.NS, dns *nstest.DNS, relay, agent *testkit.Proc, clients string) {
	t.Helper()
	bins := tunneltest.Build(t)
	ns = nstest.New(t)
	dns = nstest.ServeDNS(t, ns.ListenUDP(t, "127.0.0.1:53"), false,
		map[string]netip.Addr{"service.example.": netip.MustParseAddr("127.0.0.1")})
	ns.ResolvConf(t, "nameserver 127.0.0.1\n")
	svc := testkit.Serve(t, ns.Listen(t, "127.0.0.1:0"), testkit.Echo)
	// The namespace is the test's own: its ports are all free.
	const links = "127.0.0.1:7002"
	clients = "127.0.0.1:7001"
	relayArgs := []string{"netns", "exec", ns.Name, bins["listentwo"], "-s", clients, "-d", links, "--hello-dst"}
	agentArgs := []string{"netns", "exec", ns.Name, bins["connecttwo"], "-s", links,
		"-d", "service.example:" + strconv.Itoa(svc.Port()), "--hello-from-src", "--pool", "3"}
	if tls {
		key := filepath.Join(t.TempDir(), "relay.key")
		out, err := exec.Command(bins["listentwo"], "--print-pin", "--tls-key", key).Output()
		if err != nil {
			t.Fatalf("listentwo --print-pin: %v", err)
		}
		relayArgs = append(relayArgs, "--tls-key", key)
		agentArgs = append(agentArgs, "--tls-pin", strings.TrimSpace(string(out)))
	}
	relay = testkit.Start(t, "ip", relayArgs...)
	relay.WaitLog(t, `listening for clients`, 1, testkit.Timeout)
	agent = testkit.Start(t, "ip", agentArgs...)
	agent.WaitLog(t, `link #\d+ up `, 3, testkit.Timeout)
	if _, err := throughIn(ns, clients, 1, 16<<10, 3*time.Second); err != nil {
		t.Fatalf("a client while the resolver answers: %v", err)
	}
	return ns, dns, relay, agent, clients
}

// clientsAtOnce runs one client per seed at once through clients from inside ns, each
// moving 16 KiB each way, and fails the test for each one not served within 3 s.
func clientsAtOnce(t *testing.T, ns *nstest.NS, clients, what string, seeds ...uint64) {
	t.Helper()
	var wg sync.WaitGroup
	for _, seed := range seeds {
		wg.Go(func() {
			took, err := throughIn(ns, clients, seed, 16<<10, 3*time.Second)
			if err != nil {
				t.Errorf("%s, client %d: %v after %v", what, seed, err, took.Round(time.Millisecond))
				return
			}
			t.Logf("%s, client %d: served in %v", what, seed, took.Round(time.Millisecond))
		})
	}
	wg.Wait()
}

// TestAttackSilentResolver: connecttwo serves a service given by name (service.example),
// in a network namespace whose resolver (run by the test) answers at first and then
// never again. A plain link taken more than a second after it opened looks the name up
// again; with the resolver silent, that lookup must not cost the client the service its
// link found a moment ago, nor hold it for the dial timeout (10 s): two clients at once
// on such links, then one on such a link beside one on a link opened while the resolver
// was already silent, are each served (16 KiB each way, by SHA-256) within 3 s. Then
// SIGTERM, sent while a client's lookup is under way, ends connecttwo within a second, and
// that client sees a reset.
func TestAttackSilentResolver(t *testing.T) {
	ns, dns, relay, agent, clients := silentResolverTunnel(t, false)
	agent.WaitLog(t, `link #\d+ up `, 4, testkit.Timeout)

	dns.Silence(true)
	// The links' addresses must be older than they stay fresh (a second).
	time.Sleep(1200 * time.Millisecond)
	clientsAtOnce(t, ns, clients, "two clients on links older than a second", 2, 3)
	if t.Failed() {
		t.FailNow()
	}
	// The replacements opened while the resolver was silent.
	agent.WaitLog(t, `link #\d+ up `, 6, testkit.Timeout)
	clientsAtOnce(t, ns, clients, "one on an old link, one on a link opened while the resolver was silent", 4, 5)
	if t.Failed() {
		t.FailNow()
	}

	// A client whose link looks the name up again, and SIGTERM while it does.
	agent.WaitLog(t, `link #\d+ up `, 8, testkit.Timeout)
	time.Sleep(1200 * time.Millisecond) // the links' addresses grow old again
	opened := relay.Log.Count(` open #`)
	c, err := ns.Dial(clients, testkit.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Paired on listentwo, not yet connected on connecttwo: its lookup is under way (the
	// resolver is silent: it lasts a second).
	relay.WaitLog(t, ` open #`, opened+1, testkit.Timeout)
	if n := agent.Log.Count(` open #`); n != opened {
		t.Fatalf("connecttwo connected the client before its lookup could be cut (%d open lines, want %d)", n, opened)
	}
	took := agent.Stop(t, syscall.SIGTERM, 5*time.Second)
	t.Logf("connecttwo stopped %v after SIGTERM during a lookup", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("connecttwo took %v to stop during a lookup, want at most 1s", took)
	}
	// The client's link was cut, never ended cleanly: the client sees a reset.
	_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client whose lookup was cut by SIGTERM read %d bytes, %v; want a reset", n, err)
	}
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
}

// TestAttackSilentResolverTLS: the same with TLS links, whose service connection is made
// on a goroutine: with the resolver silent, two clients at once, then two more, are each
// served within 3 s.
func TestAttackSilentResolverTLS(t *testing.T) {
	ns, dns, _, agent, clients := silentResolverTunnel(t, true)
	dns.Silence(true)
	clientsAtOnce(t, ns, clients, "two clients", 2, 3)
	clientsAtOnce(t, ns, clients, "two more", 4, 5)
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)
}

// TestAttackSilentResolverAtStart: connecttwo is given the relay by name (relay.example) in a
// network namespace whose resolver, run by the test, never answers. Go's resolver gives
// up only after 10 s then (resolv.conf's defaults: 5 s, twice), and connecttwo said
// nothing meanwhile. It must say within 2 s, once (not per slot of --pool 2, not per
// retry), that it waits for the resolver, naming the name; SIGTERM then ends it within a
// second, status 0. With lookups that fail after 2 s (options timeout:2 attempts:1), its
// slots retry with their back-off and the line is still said once; when the resolver
// answers and listentwo runs, links come up and a client is served (16 KiB each way,
// SHA-256). The same for the service's name (service.example) with the relay's address
// given: the first lookup holds the link, and connecttwo says so once.
func TestAttackSilentResolverAtStart(t *testing.T) {
	bins := tunneltest.Build(t)
	ns := nstest.New(t)
	dns := ns.Resolver(t, true, map[string]netip.Addr{
		"relay.example.": netip.MustParseAddr("127.0.0.1"), "service.example.": netip.MustParseAddr("127.0.0.1")}, "")
	svc := testkit.Serve(t, ns.Listen(t, "127.0.0.1:0"), testkit.Echo)
	const links, clients = "7002", "127.0.0.1:7001"
	agentArgs := func(relay, service string) []string {
		return []string{"netns", "exec", ns.Name, bins["connecttwo"], "-s", relay + ":" + links,
			"-d", service + ":" + strconv.Itoa(svc.Port()), "--pool", "2"}
	}
	const waitLine = `waiting for the resolver`

	// The relay's name, lookups of 10 s: the line, then SIGTERM.
	agent := testkit.Start(t, "ip", agentArgs("relay.example", "127.0.0.1")...)
	agent.WaitLog(t, `looking up relay\.example .*`+waitLine, 1, 2*time.Second)
	took := agent.Stop(t, syscall.SIGTERM, 5*time.Second)
	if took > time.Second {
		t.Errorf("connecttwo took %v to stop during its first lookup, want at most 1s", took)
	}
	if n := agent.Log.Count(waitLine); n != 1 {
		t.Errorf("%d lines say connecttwo waits for the resolver, want 1", n)
	}
	if dns.Count("A relay.example.") == 0 {
		t.Fatalf("the test's resolver got no query for relay.example: %v", dns)
	}

	t.Logf("the relay's name, silent: stopped %v after SIGTERM", took.Round(time.Millisecond))

	// Lookups that fail after 2 s: retries with back-off, one line, then recovery.
	ns.ResolvConf(t, "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
	agent = testkit.Start(t, "ip", agentArgs("relay.example", "127.0.0.1")...)
	agent.WaitLog(t, `link #\d+ to relay\.example:`+links+` failed: .*lookup .*; retry`, 3, 8*time.Second)
	if n := agent.Log.Count(waitLine); n != 1 {
		t.Errorf("%d lines say connecttwo waits for the resolver after retries, want 1", n)
	}
	relay := testkit.Start(t, "ip", "netns", "exec", ns.Name, bins["listentwo"], "-s", clients, "-d", "127.0.0.1:"+links)
	relay.WaitLog(t, `listening for clients`, 1, testkit.Timeout)
	dns.Silence(false)
	answered := time.Now()
	agent.WaitLog(t, `link #\d+ up `, 2, 5*time.Second)
	t.Logf("links up %v after the resolver answered", time.Since(answered).Round(time.Millisecond))
	if _, err := throughIn(ns, clients, 1, 16<<10, 3*time.Second); err != nil {
		t.Errorf("a client once the resolver answers: %v", err)
	}
	if n := agent.Log.Count(waitLine); n != 1 {
		t.Errorf("%d lines say connecttwo waits for the resolver, want 1", n)
	}
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)

	// The service's name, its first lookup silent (10 s): the line, then SIGTERM.
	dns.Silence(true)
	ns.ResolvConf(t, "nameserver 127.0.0.1\n")
	agent = testkit.Start(t, "ip", agentArgs("127.0.0.1", "service.example")...)
	agent.WaitLog(t, `looking up service\.example .*`+waitLine, 1, 2*time.Second)
	took = agent.Stop(t, syscall.SIGTERM, 5*time.Second)
	if took > time.Second {
		t.Errorf("connecttwo took %v to stop during the service's first lookup, want at most 1s", took)
	}
	if n := agent.Log.Count(waitLine); n != 1 {
		t.Errorf("%d lines say connecttwo waits for the resolver for the service, want 1", n)
	}
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
}
