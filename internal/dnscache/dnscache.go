// Package dnscache keeps the answers of host-name lookups for a bounded time, as nginx's
// resolver does with valid=: an answer for Valid, a failure for Invalid. At most one lookup
// of a name runs at a time, shared by every caller that waits for it, and bounded by
// Timeout. Callers that must not block (an event loop) are told the answer through a
// Waiter.
package dnscache

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the Cache fields whose zero value means "the default".
const (
	DefaultValid   = 30 * time.Second // how long an answer is used
	DefaultInvalid = 5 * time.Second  // how long a failed lookup is remembered
	DefaultTimeout = 10 * time.Second // one lookup
)

// Answer is the result of one lookup: the addresses (IPv4 ones unmapped), or why there are
// none.
type Answer struct {
	Addrs []netip.Addr
	Err   error
}

// A Waiter is told the answer of a lookup it waits for, on the lookup's goroutine.
type Waiter interface {
	Resolved(Answer)
}

// LookupFunc looks up host's addresses for network ("ip", "ip4" or "ip6").
type LookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// Cache holds answers by network and name. The zero value is ready to use, with
// net.DefaultResolver and the defaults above. Safe for simultaneous use; an Answer's Addrs
// are shared and must not be changed.
type Cache struct {
	// Lookup does the lookups; nil is net.DefaultResolver.LookupNetIP.
	Lookup LookupFunc
	// Valid is how long an answer is used, Invalid how long a failure is, Timeout how long
	// one lookup may take; zero means the default.
	Valid, Invalid, Timeout time.Duration

	mu    sync.Mutex
	names map[key]*entry
	swept time.Time // when expired entries were last dropped
}

type key struct{ network, host string }

type entry struct {
	ans     Answer
	expires time.Time // zero before the first answer
	busy    bool      // a lookup is running
	waiters []Waiter
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Get returns host's cached answer when it is still valid (ok). Otherwise it reports !ok,
// starts a lookup unless one is running, and tells w the answer when that lookup ends;
// w is never told when ok.
func (c *Cache) Get(network, host string, w Waiter) (ans Answer, ok bool) {
	now := time.Now()
	k := key{network, host}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.names[k]
	if e != nil && now.Before(e.expires) {
		return e.ans, true
	}
	if e == nil {
		if c.names == nil {
			c.names = make(map[key]*entry)
		}
		c.sweep(now)
		e = &entry{}
		c.names[k] = e
	}
	e.waiters = append(e.waiters, w)
	if !e.busy {
		e.busy = true
		go c.lookup(k, e)
	}
	return Answer{}, false
}

// sweep drops the expired entries no lookup is running for, at most once per Valid, so a
// cache whose names change keeps only the recent ones. mu is held.
func (c *Cache) sweep(now time.Time) {
	if now.Sub(c.swept) < orDefault(c.Valid, DefaultValid) {
		return
	}
	c.swept = now
	for k, e := range c.names {
		if !e.busy && !now.Before(e.expires) {
			delete(c.names, k)
		}
	}
}

// lookup runs one lookup for e and tells its waiters.
func (c *Cache) lookup(k key, e *entry) {
	timeout := orDefault(c.Timeout, DefaultTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	look := c.Lookup
	if look == nil {
		look = net.DefaultResolver.LookupNetIP
	}
	addrs, err := look(ctx, k.network, k.host)
	timedOut := ctx.Err() != nil
	cancel()
	var ans Answer
	switch {
	case err != nil && timedOut:
		ans.Err = fmt.Errorf("looking up %s: no answer within %v", k.host, timeout)
	case err != nil:
		ans.Err = err
	case len(addrs) == 0:
		ans.Err = fmt.Errorf("looking up %s: no address", k.host)
	default:
		ans.Addrs = make([]netip.Addr, len(addrs))
		for i, a := range addrs {
			ans.Addrs[i] = a.Unmap()
		}
	}
	valid := orDefault(c.Valid, DefaultValid)
	if ans.Err != nil {
		valid = orDefault(c.Invalid, DefaultInvalid)
	}
	c.mu.Lock()
	e.ans, e.expires, e.busy = ans, time.Now().Add(valid), false
	ws := e.waiters
	e.waiters = nil
	c.mu.Unlock()
	for _, w := range ws {
		w.Resolved(ans)
	}
}

// waitFunc is a Waiter that calls a function.
type waitFunc func(Answer)

func (f waitFunc) Resolved(a Answer) { f(a) }

// Resolve returns host's answer, from the cache or from a lookup, waiting for it at most
// until ctx is done.
func (c *Cache) Resolve(ctx context.Context, network, host string) Answer {
	ch := make(chan Answer, 1)
	if ans, ok := c.Get(network, host, waitFunc(func(a Answer) { ch <- a })); ok {
		return ans
	}
	select {
	case ans := <-ch:
		return ans
	case <-ctx.Done():
		return Answer{Err: fmt.Errorf("looking up %s: %w", host, ctx.Err())}
	}
}
