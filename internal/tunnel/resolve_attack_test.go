package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/testkit"
)

// TestAttackServiceLookupStale: once the service's name has answered, a lookup that fails
// or hangs gives the last answer (within staleAfter for one that hangs), a name that no
// longer exists does not, a stop is a failure, and a new answer replaces the old. Before
// any answer, a failure is a failure.
func TestAttackServiceLookupStale(t *testing.T) {
	first := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	moved := []netip.Addr{netip.MustParseAddr("::1")}
	type answer struct {
		addrs []netip.Addr
		err   error
	}
	var next atomic.Pointer[answer]
	hang := &answer{}
	lookup := func(ctx context.Context, _ string) ([]netip.Addr, error) {
		a := next.Load()
		if a == hang {
			<-ctx.Done()
			return nil, &net.DNSError{Err: ctx.Err().Error(), IsTimeout: true}
		}
		return a.addrs, a.err
	}
	a, err := NewAgent(AgentConfig{
		Relay:   endpoint.Endpoint{Host: "127.0.0.1", Port: 9},
		Service: endpoint.Endpoint{Host: "service.test", Port: 80}, Pool: 1, lookup: lookup,
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, a *Agent, ctx context.Context, want []netip.Addr, wantErr bool, within time.Duration) {
		t.Helper()
		start := time.Now()
		got, err := a.serviceAddrs(ctx)
		took := time.Since(start)
		if (err != nil) != wantErr || !slices.Equal(got, want) || took > within {
			t.Errorf("%s: %v, %v after %v; want %v, an error %v, within %v", what, got, err, took, want, wantErr, within)
		}
	}
	timeout := &net.DNSError{Err: "i/o timeout", IsTimeout: true}
	next.Store(&answer{err: timeout})
	check("no answer yet, a timeout", a, context.Background(), nil, true, time.Second)
	next.Store(&answer{addrs: first})
	check("an answer", a, context.Background(), first, false, time.Second)
	next.Store(&answer{err: timeout})
	check("a timeout after an answer", a, context.Background(), first, false, time.Second)
	next.Store(&answer{err: &net.DNSError{Err: "server misbehaving", IsTemporary: true}})
	check("SERVFAIL after an answer", a, context.Background(), first, false, time.Second)
	next.Store(hang)
	check("a silent resolver after an answer", a, context.Background(), first, false, staleAfter+time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check("a stop", a, ctx, nil, true, time.Second)
	next.Store(&answer{err: &net.DNSError{Err: "no such host", IsNotFound: true}})
	check("NXDOMAIN after an answer", a, context.Background(), nil, true, time.Second)
	next.Store(&answer{addrs: moved})
	check("a new answer", a, context.Background(), moved, false, time.Second)
	next.Store(&answer{err: errors.New("anything")})
	check("a failure after the new answer", a, context.Background(), moved, false, time.Second)
}

// TestAttackServiceDialFailover: a TLS link's connect to a service given by name, when the
// name's first address is dead (a blackhole): with the other family next, it races after
// 300 ms and connects within a second; with the same family next, the first address gets
// its share of the dial timeout (4 s over two addresses: 2 s) and the second connects
// within 3 s, not after the whole timeout.
func TestAttackServiceDialFailover(t *testing.T) {
	live := netip.MustParseAddr("127.0.0.1")
	port := int(testkit.SharedPort(t, live, netip.IPv6Loopback(), netip.MustParseAddr("127.0.0.2")))
	testkit.Serve(t, testkit.Listen(t, netip.AddrPortFrom(live, uint16(port)).String()), func(c *net.TCPConn) {})
	loops, err := relay.NewLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loops.Close)
	for _, tc := range []struct {
		name   string
		dead   netip.Addr
		within time.Duration
	}{
		{"dead IPv6 first", netip.MustParseAddr("::1"), time.Second},
		{"dead IPv4 first", netip.MustParseAddr("127.0.0.2"), 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.BlackholeAt(t, netip.AddrPortFrom(tc.dead, uint16(port)))
			a, err := NewAgent(AgentConfig{
				Relay:   endpoint.Endpoint{Host: "127.0.0.1", Port: 9},
				Service: endpoint.Endpoint{Host: "service.test", Port: port}, Pool: 1, DialTimeout: 4 * time.Second,
				lookup: func(context.Context, string) ([]netip.Addr, error) { return []netip.Addr{tc.dead, live}, nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			a.loops = loops // as Run makes them
			start := time.Now()
			c, err := a.dialServiceFor(context.Background())
			took := time.Since(start)
			if err != nil {
				t.Fatalf("after %v: %v", took, err)
			}
			defer c.Close()
			t.Logf("connected to %v in %v", c.RemoteAddr(), took.Round(time.Millisecond))
			if got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != live || took > tc.within {
				t.Errorf("connected to %v after %v; want %v within %v", got, took, live, tc.within)
			}
		})
	}
}
