package tunnel

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// errNoLink is what pool.get returns when no link came within the wait.
var errNoLink = errors.New("no idle link")

// pool pairs waiting clients with idle links: the newest idle link goes to the next client
// (last in, first out), and a new link goes to the oldest waiting client (first come, first
// served). Newest first leaves the links that idled longest idle: those are the ones
// connecttwo closes as not needed (idle 5 s while more than --pool are idle), so a client
// is not paired with a link whose close is already on its way, and the links in use stay
// the ones that proved alive last. It holds at most max idle or admitted-but-not-yet-added links. It knows nothing
// of sockets, so its timing is tested in a synctest bubble. Safe for simultaneous use.
//
// A waiting client is a waiter: a goroutine parked in get, or a callback (getOr) that the
// one who puts the next link calls with it, so that a client waits with no goroutine and
// is paired without a wake-up. One timer, armed for the earliest deadline, gives up the
// waiters whose wait has ended.
type pool[L comparable] struct {
	max int

	mu       sync.Mutex
	idle     []L
	reserved int
	waiters  []*waiter[L]
	changed  chan struct{} // closed and replaced on every change of idle or waiters
	timer    *time.Timer   // armed for timerAt while waiters wait; nil when none does
	timerAt  time.Time
}

// waiter is one client waiting for a link until deadline: give is called with the link
// handed to it, or fail with why none came (errNoLink at the deadline, or the reason
// given to cancel), once, without the pool's lock.
type waiter[L comparable] struct {
	deadline time.Time
	give     func(L)
	fail     func(error)
}

func newPool[L comparable](max int) *pool[L] {
	return &pool[L]{max: max, changed: make(chan struct{})}
}

// notify wakes those waiting in waitUntil; p.mu is held.
func (p *pool[L]) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// reserve admits one more link, to be added with put or given back with unreserve. It
// fails when the idle links and the admitted ones already reach max and no client waits.
func (p *pool[L]) reserve() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle)+p.reserved >= p.max+len(p.waiters) {
		return ErrPoolFull
	}
	p.reserved++
	return nil
}

// unreserve gives back a reservation whose link never came.
func (p *pool[L]) unreserve() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reserved--
}

// put adds a reserved link: it goes to the oldest waiting client (whose give runs on the
// caller's goroutine), or else joins the idle list, and then onIdle runs with the pool
// locked, before any client can take the link.
func (p *pool[L]) put(l L, onIdle func(L)) {
	p.mu.Lock()
	p.reserved--
	if len(p.waiters) == 0 {
		p.idle = append(p.idle, l)
		if onIdle != nil {
			onIdle(l)
		}
		p.notify()
		p.mu.Unlock()
		return
	}
	w := p.waiters[0]
	p.waiters[0] = nil
	p.waiters = p.waiters[1:]
	p.waited()
	p.notify()
	p.mu.Unlock()
	w.give(l)
}

// remove takes l out of the idle list and reports whether it was there (a client may have
// taken it first).
func (p *pool[L]) remove(l L) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.idle, l)
	if i < 0 {
		return false
	}
	p.idle = slices.Delete(p.idle, i, i+1)
	p.notify()
	return true
}

// get returns the newest idle link, or waits up to wait for one (not at all when wait <= 0).
// front puts the caller at the head of the queue of waiting clients (a client whose link
// turned out dead keeps its turn). It returns errNoLink after the wait and ctx.Err() when
// ctx ends first.
func (p *pool[L]) get(ctx context.Context, wait time.Duration, front bool) (L, error) {
	type result struct {
		l   L
		err error
	}
	var zero L
	if wait <= 0 {
		if l, ok := p.tryGet(); ok {
			return l, nil
		}
		return zero, errNoLink
	}
	ch := make(chan result, 1) // a give or a fail never blocks
	w := &waiter[L]{
		deadline: time.Now().Add(wait),
		give:     func(l L) { ch <- result{l: l} },
		fail:     func(err error) { ch <- result{err: err} },
	}
	if l, ok := p.getOr(w, front); ok {
		return l, nil
	}
	select {
	case res := <-ch:
		return res.l, res.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		p.waited()
		p.notify()
		p.mu.Unlock()
		return zero, ctx.Err()
	}
	p.mu.Unlock()
	// A put handed us a link, or the deadline came, just as ctx ended: it is ours.
	res := <-ch
	return res.l, res.err
}

// getOr returns the newest idle link, or else queues w (at the head with front) and
// returns false: then w's give or fail is called once, on another goroutine (the one that
// puts the next link, or the deadline's timer).
func (p *pool[L]) getOr(w *waiter[L], front bool) (L, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.take(); ok {
		return l, true
	}
	if front {
		p.waiters = slices.Insert(p.waiters, 0, w)
	} else {
		p.waiters = append(p.waiters, w)
	}
	if p.timer == nil {
		p.timer, p.timerAt = time.AfterFunc(time.Until(w.deadline), p.expire), w.deadline
	} else if w.deadline.Before(p.timerAt) {
		p.timer.Reset(time.Until(w.deadline))
		p.timerAt = w.deadline
	}
	p.notify()
	var zero L
	return zero, false
}

// tryGet returns the newest idle link, if there is one.
func (p *pool[L]) tryGet() (L, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.take()
}

// take takes the newest idle link; p.mu is held.
func (p *pool[L]) take() (L, bool) {
	var zero L
	n := len(p.idle)
	if n == 0 {
		return zero, false
	}
	l := p.idle[n-1]
	p.idle[n-1] = zero
	p.idle = p.idle[:n-1]
	p.notify()
	return l, true
}

// waited stops the deadline timer once no waiter is left; p.mu is held.
func (p *pool[L]) waited() {
	if len(p.waiters) == 0 && p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

// expire gives up the waiters whose deadline has come, and arms the timer for the next.
func (p *pool[L]) expire() {
	p.mu.Lock()
	now := time.Now()
	var gone []*waiter[L]
	kept := p.waiters[:0]
	next := time.Time{}
	for _, w := range p.waiters {
		switch {
		case !w.deadline.After(now):
			gone = append(gone, w)
		default:
			kept = append(kept, w)
			if next.IsZero() || w.deadline.Before(next) {
				next = w.deadline
			}
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
	p.timer = nil
	if !next.IsZero() {
		p.timer, p.timerAt = time.AfterFunc(next.Sub(now), p.expire), next
	}
	if len(gone) > 0 {
		p.notify()
	}
	p.mu.Unlock()
	for _, w := range gone {
		w.fail(errNoLink)
	}
}

// cancel gives up every waiting client with err (the relay stops).
func (p *pool[L]) cancel(err error) {
	p.mu.Lock()
	gone := p.waiters
	p.waiters = nil
	p.waited()
	p.notify()
	p.mu.Unlock()
	for _, w := range gone {
		w.fail(err)
	}
}

// len returns the number of idle links.
func (p *pool[L]) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// waiting returns the number of clients waiting for a link.
func (p *pool[L]) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters)
}

// waitUntil waits until cond(idle links, waiting clients) holds or ctx ends.
func (p *pool[L]) waitUntil(ctx context.Context, cond func(idle, waiting int) bool) error {
	for {
		p.mu.Lock()
		n, w, ch := len(p.idle), len(p.waiters), p.changed
		p.mu.Unlock()
		if cond(n, w) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// drain empties the idle list and returns what it held.
func (p *pool[L]) drain() []L {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := p.idle
	p.idle = nil
	p.notify()
	return idle
}
