package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/health"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

// A host that refuses holds the fewest bytes: the first connection fails over from it and
// sets it aside, with one line; the next ones go to the healthy host without trying it.
// When it listens again, the background check brings it back (one line) within the first
// back-off, and it gets connections again.
func TestRefusingHostSetAside(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			good := testkit.StartBackend(t, net.JoinHostPort(host, "0"), testkit.Echo)
			ln := testkit.Listen(t, net.JoinHostPort(host, "0"))
			dead := ln.Addr().String()
			ln.Close() // nothing listens there now
			path := writeFile(t, fmt.Sprintf("%s 0\n%s 1000000\n", dead, good.Addr()))
			pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9})
			const n = 6
			for i := range n {
				testkit.RoundTrip(t, testkit.Dial(t, pf.addr), uint64(i), 5000)
				if got := openedTo(t, pf, i+1); got != good.Addr() {
					t.Fatalf("connection %d went to %s, want %s", i+1, got, good.Addr())
				}
			}
			q := regexp.QuoteMeta(dead)
			if c := pf.log.Count(`failed #\d+ \S+ -> ` + q + `: connection refused$`); c != 1 {
				t.Errorf("%d failed lines for %s, want 1: the host is tried once, then set aside:\n%s", c, dead, pf.log)
			}
			pf.log.WaitFor(t, `host `+q+` set aside \(connection refused\)`, 1, time.Second)

			back := testkit.Serve(t, testkit.Listen(t, dead), testkit.Echo)
			pf.log.WaitFor(t, `host `+q+` back in service`, 1, 5*time.Second)
			testkit.RoundTrip(t, testkit.Dial(t, pf.addr), n, 5000)
			if got := openedTo(t, pf, n+1); got != dead {
				t.Errorf("after its return, the host with the fewest bytes did not get the connection (%s did)", got)
			}
			if back.Accepts.Load() < 2 {
				t.Errorf("the returned host accepted %d connections, want the check's and a client's", back.Accepts.Load())
			}
			if c := pf.log.Count(`host ` + q + ` (set aside|back in service)`); c != 2 {
				t.Errorf("%d set-aside and back lines, want one each:\n%s", c, pf.log)
			}
		})
	}
}

// Hosts set aside rank after all the others, in their usual order among themselves; when
// every host is set aside, every one is still a candidate.
func TestAsideRanksLast(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "192.0.2.1 0\n192.0.2.2 10\n[2001:db8::3]:81 20\n192.0.2.4 30\n")
	b, _, err := newBalancer(hostfile.NewStore(path), 80)
	if err != nil {
		t.Fatal(err)
	}
	never := func(context.Context, endpoint.Endpoint) error { return errors.New("refused") }
	b.health = health.New(never, func(string, ...any) {})
	defer b.health.Close()
	order := func() string { // a connection's failover order: the best host not tried, until none
		var tried []*hostEntry
		for e := b.pick(nil); e != nil; e = b.pick(tried) {
			tried = append(tried, e)
			b.release(e)
		}
		var names []string
		for _, e := range tried {
			names = append(names, e.ep.String())
		}
		return strings.Join(names, " ")
	}
	for _, tc := range []struct {
		fail string // the host that fails next, "" for none
		want string
	}{
		{"", "192.0.2.1:80 192.0.2.2:80 [2001:db8::3]:81 192.0.2.4:80"},
		{"192.0.2.1:80", "192.0.2.2:80 [2001:db8::3]:81 192.0.2.4:80 192.0.2.1:80"},
		{"[2001:db8::3]:81", "192.0.2.2:80 192.0.2.4:80 192.0.2.1:80 [2001:db8::3]:81"},
		{"192.0.2.2:80", "192.0.2.4:80 192.0.2.1:80 192.0.2.2:80 [2001:db8::3]:81"},
		{"192.0.2.4:80", "192.0.2.1:80 192.0.2.2:80 [2001:db8::3]:81 192.0.2.4:80"},
	} {
		if tc.fail != "" {
			ep, err := endpoint.ParseHostPort(tc.fail)
			if err != nil {
				t.Fatal(err)
			}
			b.health.Failed(ep, errors.New("refused"))
		}
		if got := order(); got != tc.want {
			t.Errorf("after %q failed: candidates %s, want %s", tc.fail, got, tc.want)
		}
	}
	// A host removed from the file is forgotten at the next reread.
	if err := os.WriteFile(path, []byte("192.0.2.1 0\n192.0.2.2 10\n[2001:db8::3]:81 20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.reread(); err != nil {
		t.Fatal(err)
	}
	gone := endpoint.Endpoint{Host: "192.0.2.4", Port: 80}
	if b.health.Aside(gone) || !b.health.Aside(endpoint.Endpoint{Host: "192.0.2.1", Port: 80}) {
		t.Errorf("after the reread: %v aside %v, want only the hosts still in the file aside", gone, b.health.Aside(gone))
	}
}

// When every host is set aside, a client is still tried on all of them: the one that
// listens again serves it at once, before any check, and is back in service.
func TestAllAsideStillTried(t *testing.T) {
	t.Parallel()
	a := testkit.ClosedPort(t, "127.0.0.1")
	ln := testkit.Listen(t, "[::1]:0")
	b := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	path := writeFile(t, fmt.Sprintf("127.0.0.1:%d 0\n[::1]:%d 10\n", a, b))
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9})
	// The client is reset; on loopback that can happen before its connect call returns.
	if c, err := net.DialTimeout("tcp", pf.addr, 5*time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a client was served with every host down")
		}
		c.Close()
	}
	pf.log.WaitFor(t, `host \S+ set aside`, 2, 5*time.Second)

	back := testkit.StartBackend(t, fmt.Sprintf("[::1]:%d", b), testkit.Echo)
	testkit.RoundTrip(t, testkit.Dial(t, pf.addr), 1, 5000)
	if got, want := openedTo(t, pf, 2), fmt.Sprintf("[::1]:%d", b); got != want {
		t.Errorf("with every host set aside, the client went to %s, want %s, the one listening", got, want)
	}
	pf.log.WaitFor(t, fmt.Sprintf(`host \[::1\]:%d back in service`, b), 1, 5*time.Second)
	if back.Accepts.Load() < 1 {
		t.Error("the host that listens again accepted nothing")
	}
}
