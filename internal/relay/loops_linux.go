package relay

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
)

// Loops is a set of event loops, one per CPU by default, that relay pairs of TCP
// connections handed to them by goroutines (the tunnel's control plane): each pair runs as
// a Pair on the loop with the fewest pairs, costing no goroutine of its own while it
// relays. Relay is safe for simultaneous use.
type Loops struct {
	loops   []*Loop
	cancel  context.CancelFunc
	running sync.WaitGroup
}

// Loop is one loop of a Loops and the number of pairs it relays.
type Loop struct {
	lp    *eventloop.Loop
	pairs atomic.Int64
}

// NewLoops starts n event loops (GOMAXPROCS when n <= 0), each on a goroutine locked to
// its own thread, until Close.
func NewLoops(n int) (*Loops, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ls := &Loops{cancel: cancel}
	for range n {
		lp, err := eventloop.New()
		if err != nil {
			ls.Close()
			return nil, fmt.Errorf("starting an event loop: %w", err)
		}
		ls.loops = append(ls.loops, &Loop{lp: lp})
		ls.running.Go(func() { _ = lp.Run(ctx) })
	}
	return ls, nil
}

// Close stops the loops and waits for them. Call it once every pair has ended (its OnEnd
// was called): a pair still running then is dropped with its sockets open.
func (ls *Loops) Close() {
	ls.cancel()
	ls.running.Wait()
}

// Start relays client and server on the loop with the fewest pairs, with o, and returns
// at once: the pair holds no goroutine, and o.OnEnd is called on the loop with the result
// once both sockets are closed (always, also when the pair cannot start). It takes both
// sockets from the standard library (Detach). The end of ctx cuts the pair (EndStopped).
func (ls *Loops) Start(ctx context.Context, client, server *net.TCPConn, o PairOptions) {
	fail := func(err error) {
		if o.OnEnd != nil {
			o.OnEnd(Result{End: "error: " + err.Error(), Err: err})
		}
	}
	cfd, err := Detach(client)
	if err != nil {
		_ = client.Close()
		_ = server.Close()
		fail(err)
		return
	}
	sfd, err := Detach(server)
	if err != nil {
		closeFDs(cfd)
		_ = server.Close()
		fail(err)
		return
	}
	l := ls.Least()
	l.Post(func() { l.StartPair(ctx, cfd, sfd, o) })
}

// Least returns the loop with the fewest pairs, for a caller that sets sockets up on the
// loop itself (a first read, a connect) before they are a pair.
func (ls *Loops) Least() *Loop {
	l := ls.loops[0]
	for _, s := range ls.loops[1:] {
		if s.pairs.Load() < l.pairs.Load() {
			l = s
		}
	}
	return l
}

// At returns loop i modulo their number: for spreading a caller's sockets over the loops
// before any pair runs.
func (ls *Loops) At(i int) *Loop { return ls.loops[i%len(ls.loops)] }

// Len returns the number of loops.
func (ls *Loops) Len() int { return len(ls.loops) }

// Near returns l, unless another loop relays at least two pairs fewer: then the loop with
// the fewest. For a caller that sets sockets up on one loop after another (connecttwo's
// links) and moves, with a Post, only when the loads drift apart.
func (ls *Loops) Near(l *Loop) *Loop {
	if least := ls.Least(); least.pairs.Load() <= l.pairs.Load()-2 {
		return least
	}
	return l
}

// Post runs f on the loop soon; it may be called from any goroutine.
func (l *Loop) Post(f func()) { l.lp.Post(f) }

// Events returns the loop's event loop, for callbacks that run on it.
func (l *Loop) Events() *eventloop.Loop { return l.lp }

// StartPair relays the non-blocking sockets client and server (descriptors the loop may
// already watch) as a Pair with o. It must be called on the loop. o.OnEnd is called on the
// loop once both are closed, also when the pair cannot start; the end of ctx cuts it
// (EndStopped).
func (l *Loop) StartPair(ctx context.Context, client, server int, o PairOptions) {
	onEnd := o.OnEnd
	if onEnd == nil {
		onEnd = func(Result) {}
	}
	l.pairs.Add(1)
	lp := l.lp
	var p *Pair // set and read on the loop only
	stop := context.AfterFunc(ctx, func() {
		lp.Post(func() {
			if p != nil {
				p.Abort(EndStopped)
			}
		})
	})
	o.OnEnd = func(r Result) {
		stop()
		l.pairs.Add(-1)
		onEnd(r)
	}
	var err error
	if p, err = StartPair(lp, client, server, o); err != nil {
		lp.Remove(client)
		lp.Remove(server)
		closeFDs(client, server)
		o.OnEnd(Result{End: "error: " + err.Error(), Err: err})
		return
	}
	if ctx.Err() != nil { // its cut may have come before the pair
		p.Abort(EndStopped)
	}
}

// Relay is Start that waits for the pair's end and returns its result.
func (ls *Loops) Relay(ctx context.Context, client, server *net.TCPConn, o PairOptions) Result {
	done := make(chan Result, 1)
	onEnd := o.OnEnd
	o.OnEnd = func(r Result) {
		if onEnd != nil {
			onEnd(r)
		}
		done <- r
	}
	ls.Start(ctx, client, server, o)
	return <-done
}

// closeFDs closes descriptors that were never handed to a loop.
func closeFDs(fds ...int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}
