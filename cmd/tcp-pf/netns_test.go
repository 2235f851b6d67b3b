package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/test/netns/nstest"
)

// These tests run the real tcp-pf inside a network namespace of their own ("ip netns exec"),
// where the test controls the resolver (a UDP socket on the namespace's 127.0.0.1:53) and
// the firewall, and opens its backends and clients inside the namespace too.

// startPFIn runs tcp-pf inside ns, listening on 127.0.0.1 there.
func startPFIn(t *testing.T, ns *nstest.NS, args ...string) *proc {
	t.Helper()
	return startPF(t, "127.0.0.1", "exec ip netns exec "+ns.Name, args...)
}

// hostFile writes text to a new host file and returns its path.
func hostFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// served connects to tcp-pf from inside ns and waits, up to bound, for the backend to close
// the relayed connection cleanly (EOF, not the reset of a client tcp-pf could not serve).
// It returns how long that took.
func served(t *testing.T, ns *nstest.NS, addr string, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := ns.Dial(addr, bound)
	if err != nil {
		t.Fatalf("connecting to tcp-pf: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(start.Add(bound))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after %v: want the backend's clean close within %v, got %d bytes, %v", time.Since(start).Round(time.Millisecond), bound, n, err)
	}
	return time.Since(start)
}

// A host-file name is looked up only when its entry is tried: with a resolver that never
// answers, connections to the literal host with the fewest bytes are served at once, and
// the name is not even asked for. A -d name that does not resolve is one warning at start.
func TestNetnsSilentResolver(t *testing.T) {
	t.Parallel()
	ns := nstest.New(t)
	dns := nstest.ServeDNS(t, ns.ListenUDP(t, "127.0.0.1:53"), true, nil)
	ns.ResolvConf(t, "nameserver 127.0.0.1\n")
	// The backend closes at once: no byte moves, so the literal keeps the fewest bytes.
	be := testkit.Serve(t, ns.Listen(t, "127.0.0.1:0"), func(*net.TCPConn) {})
	path := hostFile(t, "127.0.0.1 0\nbackend1.example 10\n")
	p := startPFIn(t, ns, "-l", path, "-p", strconv.Itoa(be.Port()))
	const n = 5
	for i := range n {
		// Looked up on every connection, the name held each one for the connect
		// timeout (10 s).
		d := served(t, ns, p.addr, 2*time.Second)
		t.Logf("connection %d served in %v", i+1, d.Round(time.Millisecond))
	}
	if got := be.Accepts.Load(); got != n {
		t.Errorf("backend accepted %d connections, want %d", got, n)
	}
	if q := dns.Count("A backend1.example."); q != 0 {
		t.Errorf("%d queries for a name never tried (%v)", q, dns)
	}

	d := startPFIn(t, ns, "-d", "backend1.example:80", "--connect-timeout", "1")
	d.Log.WaitFor(t, `warning: destination backend1\.example:80 does not resolve`, 1, 10*time.Second)
	if c := d.Log.Count(`^.*backend1\.example.*$`); c != 2 { // the listening line and the warning
		t.Errorf("%d lines name backend1.example, want the listening line and one warning:\n%s", c, d.Log)
	}
}

// Answers are cached for a bounded time, and one lookup serves every connection that needs
// the name: ten connections through a name, one query.
func TestNetnsResolverCache(t *testing.T) {
	t.Parallel()
	ns := nstest.New(t)
	dns := nstest.ServeDNS(t, ns.ListenUDP(t, "127.0.0.1:53"), false,
		map[string]netip.Addr{"backend1.example.": netip.MustParseAddr("127.0.0.1")})
	ns.ResolvConf(t, "nameserver 127.0.0.1\n")
	be := testkit.Serve(t, ns.Listen(t, "127.0.0.1:0"), testkit.Echo)
	path := hostFile(t, "backend1.example 0\n")
	p := startPFIn(t, ns, "-l", path, "-p", strconv.Itoa(be.Port()))
	const n = 10
	relay := func(i int) {
		c, err := ns.Dial(p.addr, 5*time.Second)
		if err != nil {
			t.Errorf("connecting to tcp-pf: %v", err)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		testkit.RoundTrip(t, c, uint64(i), 10000)
	}
	var wg sync.WaitGroup
	for i := range n / 2 { // at once: they share one lookup
		wg.Go(func() { relay(i) })
	}
	wg.Wait()
	for i := n / 2; i < n; i++ { // one after the other: the answer is cached
		relay(i)
	}
	if got := be.Accepts.Load(); got != n {
		t.Errorf("backend accepted %d connections, want %d", got, n)
	}
	if q := dns.Count("A backend1.example."); q != 1 {
		t.Errorf("%d A queries for %d connections within the validity time, want 1 (%v)", q, n, dns)
	}
}

// A host that drops SYNs and holds the fewest bytes costs one connection the connect
// timeout; then it is set aside and the others go to the healthy host at once. Once it
// answers again, a background connect check brings it back.
func TestNetnsSilentHost(t *testing.T) {
	t.Parallel()
	ns := nstest.New(t)
	ns.Run(t, "ip", "addr", "add", "192.0.2.9/32", "dev", "lo")
	ns.Nft(t, `table inet silent {
	chain input {
		type filter hook input priority 0;
		ip daddr 192.0.2.9 tcp dport 7 drop
	}
}
`)
	be := testkit.Serve(t, ns.Listen(t, "127.0.0.1:0"), func(*net.TCPConn) {})
	path := hostFile(t, fmt.Sprintf("192.0.2.9:7 0\n127.0.0.1:%d 1000000\n", be.Port()))
	const timeout = 3 * time.Second
	p := startPFIn(t, ns, "-l", path, "-p", "9", "--connect-timeout", "3")

	if d := served(t, ns, p.addr, timeout+3*time.Second); d < timeout {
		t.Errorf("the first connection was served in %v, before the connect timeout to the silent host", d)
	}
	p.Log.WaitFor(t, `failed #1 .* -> 192\.0\.2\.9:7: connection timed out`, 1, time.Second)
	for range 4 { // each waited the whole connect timeout
		served(t, ns, p.addr, timeout/2)
	}
	if c := p.Log.Count(`failed #`); c != 1 {
		t.Errorf("%d failed lines, want 1 (the first connection's):\n%s", c, p.Log)
	}
	p.Log.WaitFor(t, `host 192\.0\.2\.9:7 set aside`, 1, time.Second)

	// The host answers again: the check brings it back, and it gets the next connection.
	ok := testkit.Serve(t, ns.Listen(t, "192.0.2.9:7"), func(*net.TCPConn) {})
	ns.Run(t, "nft", "delete", "table", "inet", "silent")
	p.Log.WaitFor(t, `host 192\.0\.2\.9:7 back in service`, 1, 15*time.Second)
	served(t, ns, p.addr, timeout/2)
	if ok.Accepts.Load() < 2 { // the check's and the client's
		t.Errorf("the host back in service got %d connections, want the check's and a client's", ok.Accepts.Load())
	}
	if c := p.Log.Count(`set aside|back in service`); c != 2 {
		t.Errorf("%d set-aside and back lines, want one each:\n%s", c, p.Log)
	}
}

// A name with an IPv6 address that drops SYNs (a broken IPv6 route, the commonest dual-stack
// failure) and a working IPv4 one: IPv4 starts racing 300 ms later and serves the client,
// as net.Dialer would, instead of after the whole connect timeout on the IPv6 address.
func TestNetnsDualStackBlackhole(t *testing.T) {
	t.Parallel()
	ns := nstest.New(t)
	ns.Run(t, "ip", "addr", "add", "192.0.2.9/32", "dev", "lo")
	ns.Run(t, "ip", "addr", "add", "2001:db8::9/128", "dev", "lo", "nodad")
	ns.Nft(t, `table inet blackhole {
	chain input {
		type filter hook input priority 0;
		ip6 daddr 2001:db8::9 tcp flags syn drop
	}
}
`)
	nstest.ServeDNS(t, ns.ListenUDP(t, "127.0.0.1:53"), true, nil) // nothing may leave the namespace
	ns.ResolvConf(t, "nameserver 127.0.0.1\n")
	ns.Hosts(t, "2001:db8::9 dual.example\n192.0.2.9 dual.example\n") // IPv6 first
	be := testkit.Serve(t, ns.Listen(t, "192.0.2.9:0"), func(*net.TCPConn) {})
	p := startPFIn(t, ns, "-d", "dual.example:"+strconv.Itoa(be.Port()))
	for i := range 3 {
		// Tried in turn, each client waited the 10 s connect timeout on 2001:db8::9.
		d := served(t, ns, p.addr, 3*time.Second)
		t.Logf("connection %d served in %v", i+1, d.Round(time.Millisecond))
	}
	if c := p.Log.Count(`failed #`); c != 0 {
		t.Errorf("%d failed lines: the IPv6 attempt lost the race, it did not fail:\n%s", c, p.Log)
	}
}

// TestAttackSignalDuringAllowLookup: tcp-pf -a client.example in a namespace whose
// resolver never answers waits at start for the name (10 s by resolv.conf's defaults).
// SIGTERM then must end it at once as a stop (status 0, one line that says what it was
// looking up), not as a usage error that calls the name unknown (status 2).
func TestAttackSignalDuringAllowLookup(t *testing.T) {
	ns := nstest.New(t)
	dns := ns.Resolver(t, true, map[string]netip.Addr{"client.example.": netip.MustParseAddr("127.0.0.1")}, "")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "tcp-pf", "-s", "127.0.0.1:7001", "-d", "127.0.0.1:7002", "-a", "client.example")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0") // a -race binary waits a second at its exit otherwise
	p := testkit.StartCmd(t, cmd)
	testkit.WaitUntil(t, testkit.Timeout, "the lookup of client.example", func() bool { return dns.Count("A client.example.") > 0 })
	p.Signal(t, syscall.SIGTERM)
	code, took := p.Exit(t, 5*time.Second)
	if code != 0 || took > time.Second || p.Log.Count(`^tcp-pf: stopped before listening: looking up -a client\.example`) != 1 {
		t.Errorf("SIGTERM during the lookup of -a client.example: exit %d after %v, stderr %q; want 0 within 1s, one line that it stopped",
			code, took.Round(time.Millisecond), p.Log.String())
	}
}
