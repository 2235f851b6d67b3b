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

// pool pairs waiting clients with idle links, first come first served on both sides: the
// oldest idle link goes to the next client, and a new link goes to the oldest waiting
// client. It holds at most max idle or admitted-but-not-yet-added links. It knows nothing
// of sockets, so its timing is tested in a synctest bubble. Safe for simultaneous use.
type pool[L comparable] struct {
	max int

	mu       sync.Mutex
	idle     []L
	reserved int
	waiters  []*waiter[L]
	changed  chan struct{} // closed and replaced on every change of idle or waiters
}

type waiter[L comparable] struct {
	ch chan L // buffered: a put never blocks on a waiter
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

// put adds a reserved link: it goes to the oldest waiting client, or else joins the idle
// list, and then onIdle runs with the pool locked, before any client can take the link.
func (p *pool[L]) put(l L, onIdle func(L)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reserved--
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w.ch <- l
		p.notify()
		return
	}
	p.idle = append(p.idle, l)
	if onIdle != nil {
		onIdle(l)
	}
	p.notify()
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

// get returns the oldest idle link, or waits up to wait for one (not at all when wait <= 0).
// front puts the caller at the head of the queue of waiting clients (a client whose link
// turned out dead keeps its turn). It returns errNoLink after the wait and ctx.Err() when
// ctx ends first.
func (p *pool[L]) get(ctx context.Context, wait time.Duration, front bool) (L, error) {
	var zero L
	p.mu.Lock()
	if len(p.idle) > 0 {
		l := p.idle[0]
		p.idle = p.idle[1:]
		p.notify()
		p.mu.Unlock()
		return l, nil
	}
	if wait <= 0 {
		p.mu.Unlock()
		return zero, errNoLink
	}
	w := &waiter[L]{ch: make(chan L, 1)}
	if front {
		p.waiters = slices.Insert(p.waiters, 0, w)
	} else {
		p.waiters = append(p.waiters, w)
	}
	p.notify()
	p.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	var err error
	select {
	case l := <-w.ch:
		return l, nil
	case <-t.C:
		err = errNoLink
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		p.notify()
		return zero, err
	}
	// A put handed us a link just as the wait ended: it is ours.
	return <-w.ch, nil
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
