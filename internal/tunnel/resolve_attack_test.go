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
