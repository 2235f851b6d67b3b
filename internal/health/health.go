// Package health keeps track of the hosts of a pool that failed: a host that refused or
// did not answer a connection is set aside (tried only after the others) until a
// background check (a TCP connect, not a client's connection) succeeds. The checks back
// off from FirstBackoff, doubling up to MaxBackoff. A host is logged once when it is set
// aside and once when it returns.
package health

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"shd-tcp-tools/internal/endpoint"
)

// The back-off between the checks of a host set aside: the first check comes FirstBackoff
// after the failure, and each failed check doubles the wait, up to MaxBackoff.
const (
	FirstBackoff = time.Second
	MaxBackoff   = 30 * time.Second
)

// CheckFunc reports whether the host at ep answers now (nil) or not, within ctx.
type CheckFunc func(ctx context.Context, ep endpoint.Endpoint) error

// Tracker knows which hosts are set aside. Aside and OK cost one atomic load while no host
// is set aside, so the path of every connection can ask. Failed and OK return their log
// line, for the caller to write in its order; the line of a check's success goes to the
// Tracker's log function. Safe for simultaneous use.
type Tracker struct {
	check CheckFunc
	logf  func(format string, args ...any)

	ctx    context.Context // ends the checks at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	hosts map[endpoint.Endpoint]*host
	// aside is the set of hosts set aside, replaced (never changed) under mu, so that
	// readers take no lock.
	aside   atomic.Pointer[map[endpoint.Endpoint]struct{}]
	version atomic.Uint64 // one more at every change of aside
	closed  bool
}

// host is one host set aside.
type host struct {
	since  time.Time     // when it was set aside
	wait   time.Duration // before the next check
	checks int           // failed checks so far
	timer  *time.Timer   // the next check
}

// New returns a Tracker that checks hosts with check and logs with logf.
func New(check CheckFunc, logf func(format string, args ...any)) *Tracker {
	t := &Tracker{check: check, logf: logf, hosts: make(map[endpoint.Endpoint]*host)}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Aside reports whether ep is set aside. A nil Tracker sets nothing aside.
func (t *Tracker) Aside(ep endpoint.Endpoint) bool {
	if t == nil {
		return false
	}
	set := t.aside.Load()
	if set == nil || len(*set) == 0 {
		return false
	}
	_, ok := (*set)[ep]
	return ok
}

// Version returns a number that changes whenever a host is set aside or returns, so that
// a caller that keeps its own order of the hosts (tcp-pf's balancer) knows when to look
// at Aside again. One atomic load; a nil Tracker's version is always 0.
func (t *Tracker) Version() uint64 {
	if t == nil {
		return 0
	}
	return t.version.Load()
}

// Failed records that a connection to ep failed with err: a host not yet set aside is set
// aside, to be checked after FirstBackoff, and the line to log about it is returned; ""
// when it was aside already.
func (t *Tracker) Failed(ep endpoint.Endpoint, err error) string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.hosts[ep] != nil {
		return ""
	}
	h := &host{since: time.Now(), wait: FirstBackoff}
	t.hosts[ep] = h
	t.publish()
	t.schedule(ep, h)
	return fmt.Sprintf("host %s set aside (%v): tried after the others until a connect check succeeds, first in %v, backing off to %v",
		ep, err, FirstBackoff, MaxBackoff)
}

// OK records that a connection to ep succeeded: a host set aside returns at once, and the
// line to log about it is returned; "" when it was not aside.
func (t *Tracker) OK(ep endpoint.Endpoint) string {
	if !t.Aside(ep) {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.hosts[ep]; h != nil {
		return t.back(ep, h, "a connection to it succeeded")
	}
	return ""
}

// Forget drops what is known of ep, silently: for a host no longer in the pool.
func (t *Tracker) Forget(ep endpoint.Endpoint) {
	if !t.Aside(ep) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.hosts[ep]; h != nil {
		t.stop(h)
		delete(t.hosts, ep)
		t.publish()
	}
}

// Retain forgets, silently, every host set aside for which keep is false: for hosts no
// longer in the pool.
func (t *Tracker) Retain(keep func(endpoint.Endpoint) bool) {
	if t == nil {
		return
	}
	if set := t.aside.Load(); set == nil || len(*set) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for ep, h := range t.hosts {
		if !keep(ep) {
			t.stop(h)
			delete(t.hosts, ep)
		}
	}
	t.publish()
}

// Close stops the checks and waits for those running to end. Failed does nothing after it.
func (t *Tracker) Close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.closed = true
	for _, h := range t.hosts {
		t.stop(h)
	}
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// schedule arms h's next check. mu is held.
func (t *Tracker) schedule(ep endpoint.Endpoint, h *host) {
	t.wg.Add(1)
	h.timer = time.AfterFunc(h.wait, func() {
		defer t.wg.Done()
		err := t.check(t.ctx, ep)
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.closed || t.hosts[ep] != h { // returned or forgotten meanwhile
			return
		}
		if err == nil {
			t.logf("%s", t.back(ep, h, "a connect check succeeded"))
			return
		}
		h.checks++
		h.wait = min(2*h.wait, MaxBackoff)
		t.schedule(ep, h)
	})
}

// stop cancels h's next check, unless it is running. mu is held.
func (t *Tracker) stop(h *host) {
	if h.timer.Stop() {
		t.wg.Done() // for the check that will not run
	}
}

// back ends h's time aside and returns the line to log. mu is held.
func (t *Tracker) back(ep endpoint.Endpoint, h *host, why string) string {
	t.stop(h)
	delete(t.hosts, ep)
	t.publish()
	line := fmt.Sprintf("host %s back in service after %v: %s", ep, time.Since(h.since).Round(time.Millisecond), why)
	if h.checks > 0 {
		line += fmt.Sprintf(" (%d checks had failed)", h.checks)
	}
	return line
}

// publish replaces the set read by Aside. mu is held.
func (t *Tracker) publish() {
	set := make(map[endpoint.Endpoint]struct{}, len(t.hosts))
	for ep := range t.hosts {
		set[ep] = struct{}{}
	}
	t.aside.Store(&set)
	t.version.Add(1)
}
