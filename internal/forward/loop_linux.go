package forward

import (
	"context"

	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/accept"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/loopdial"
	"shd-tcp-tools/internal/sock"
)

// The event-loop engine: one loop per CPU, each on its own thread, accepts from the shared
// listening socket and runs every connection it accepted as a state machine (connect,
// --insert, splice both ways, close) on raw non-blocking sockets. A connection costs no
// goroutine, and the standard library's per-connection work (address look-ups, goroutine
// wake-ups, stack growth) is gone; what is left is the system calls the relay needs.

// engine is the set of loops serving one listener.
type engine struct {
	s      *Server
	lfd    int
	dialer loopdial.Config // how connections connect to their destinations
	loops  []*loopState
	fatal  chan error // an accept error that is not a shortage; buffered, first one kept
}

// loopState is what one loop owns: its connections and whether it accepts.
type loopState struct {
	e      *engine
	lp     *eventloop.Loop
	log    *connlog.Logger     // the server's log, flushed before each wait
	counts *connstats.Counters // this loop's share of the server's counts (Server.Stats)
	// counted is the relay's Progress for the counts: made once per loop, not per connection.
	counted  func(up bool, n int64)
	conns    map[*lconn]struct{}
	acceptor *accept.OnLoop // takes clients from the listening socket, with the back-off

	young     []*lconn         // connected since the last keepalive round
	keepalive *eventloop.Timer // the next keepalive round, while young is not empty

	hdr *headerReader // clients' PROXY headers (--accept-proxy), made on first use

	logTimer *eventloop.Timer // flushes the log lines logDelay after the first not yet written
	logDue   bool             // ... and is armed

	// spareDials are Dials no connection uses now (a connection takes one while it
	// connects and gives it back, so relaying connections hold none).
	spareDials []*loopdial.Dial
}

// The log lines of a loop's rounds are written in one go once they reach logBatch bytes,
// or logDelay after the first of them was logged, whichever comes first. Written before
// every wait, as they were, two lines a short connection cost 1.3 writes (to a file, about
// 5 µs each of tcp-pf's CPU time per connection); gathered, a busy loop writes about 100
// times a second. A line's timestamp is still the time of its round.
const (
	logBatch = 16 << 10
	logDelay = 10 * time.Millisecond
)

// flushLog runs before each wait: it writes the lines held once there are logBatch bytes of
// them, or has them written logDelay after the first.
func (ls *loopState) flushLog() {
	n := ls.log.Buffered()
	switch {
	case n >= logBatch:
		ls.log.Flush()
		if ls.logDue {
			ls.logTimer.Stop()
			ls.logDue = false
		}
	case n > 0 && !ls.logDue:
		ls.logDue = true
		if ls.logTimer == nil {
			ls.logTimer = ls.lp.AfterFunc(logDelay, func() {
				ls.logDue = false
				ls.log.Flush()
			})
			return
		}
		ls.logTimer.Reset(logDelay)
	}
}

// takeDial returns a spare Dial, or a new one.
func (ls *loopState) takeDial() *loopdial.Dial {
	if n := len(ls.spareDials); n > 0 {
		d := ls.spareDials[n-1]
		ls.spareDials = ls.spareDials[:n-1]
		return d
	}
	return new(loopdial.Dial)
}

// keepAliveDelay is how often a loop turns keepalive on for the destination sockets of
// the connections made since its last round that are still open. Keepalive only matters
// for a connection idle for its whole period (15 s by default), so short connections are
// spared four system calls, and a long one gets its first probe at most this much later.
const keepAliveDelay = time.Second

// keepAliveLater has keepalive set on c's destination socket in the next round, if c is
// still open then.
func (ls *loopState) keepAliveLater(c *lconn) {
	period := orDefault(ls.e.s.cfg.KeepAlive, DefaultKeepAlive)
	if period <= 0 {
		return
	}
	ls.young = append(ls.young, c)
	if ls.keepalive != nil {
		return
	}
	ls.keepalive = ls.lp.AfterFunc(keepAliveDelay, func() {
		ls.keepalive = nil
		for _, c := range ls.young {
			if c.state == stInserting || c.state == stRelaying && !c.pair.Closing() {
				_ = sock.SetKeepAlive(c.sfd, period)
			}
		}
		clear(ls.young)
		ls.young = ls.young[:0]
	})
}

// serveLoops accepts on ln with one event loop per CPU until ctx is cancelled, then stops
// accepting (before returning, so ln can be closed) and returns. The loops keep running the
// open connections until stop is called: cut ends those still open, and stop ends the loops.
func (s *Server) serveLoops(ctx context.Context, ln *net.TCPListener) (cut func(), stop func(), err error) {
	raw, err := ln.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	e := &engine{s: s, fatal: make(chan error, 1), dialer: loopdial.Config{
		Timeout: orDefault(s.cfg.ConnectTimeout, DefaultConnectTimeout), Local: s.cfg.Local, Socket: s.socket}}
	if err := raw.Control(func(fd uintptr) { e.lfd = int(fd) }); err != nil {
		return nil, nil, err
	}
	lfd := e.lfd
	// Every loop exists before any accepts: a loop that cannot be made for lack of
	// descriptors is a start-up error, not one with connections already in flight.
	runCtx, end := context.WithCancel(context.WithoutCancel(ctx))
	n := s.cfg.loops()
	for range n {
		lp, err := eventloop.New()
		if err != nil {
			end()
			for _, ls := range e.loops {
				_ = ls.lp.Run(runCtx) // returns at once, releasing the loop's descriptors
			}
			return nil, nil, fmt.Errorf("starting an event loop: %w", err)
		}
		ls := &loopState{e: e, lp: lp, log: s.log.BufferAt(lp.Now), counts: s.loopCounts(len(e.loops)), conns: map[*lconn]struct{}{}}
		ls.counted = ls.counts.Moved
		// A round's log lines are stamped with the round's time and gathered across
		// rounds (see logBatch).
		lp.BeforeWait(ls.flushLog)
		e.loops = append(e.loops, ls)
	}
	// The loops accept on a duplicate of the listening socket, and ln is closed, which
	// takes the socket out of the Go runtime's poller. Left there, every new client woke a
	// thread blocked in the runtime's epoll_wait whenever some goroutine waited in it (the
	// --metrics listener's Accept), for no goroutine: nothing accepts on ln itself.
	if dup, err := unix.FcntlInt(uintptr(lfd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
		e.lfd = dup
		_ = ln.Close()
		defer unix.Close(dup) // once accepting stopped: the socket closes, as ln's Close did
	}
	var running sync.WaitGroup
	for _, ls := range e.loops {
		ls.acceptor = accept.NewOnLoop(ls.lp, e.lfd, accept.LoopConfig{
			Back: &s.back, Now: s.cfg.now, Exclusive: true, Batch: acceptBatch, Accepted: ls.accepted,
			Log:   func(line string) { ls.log.Warnf("%s", line) },
			Fatal: e.fail,
		})
		ls.lp.Post(func() {
			if err := ls.acceptor.Start(); err != nil {
				e.fail(fmt.Errorf("accepting on %s: %w", ln.Addr(), err))
			}
		})
		running.Go(func() {
			_ = ls.lp.Run(runCtx)
			ls.log.Flush() // what the last rounds logged: the loop's timer for it is gone
		})
	}
	select {
	case <-ctx.Done():
	case err = <-e.fatal:
	}
	e.onEachLoop(func(ls *loopState) { ls.acceptor.Stop() })
	cut = func() {
		e.onEachLoop(func(ls *loopState) {
			for c := range ls.conns {
				c.abort(endStopped)
			}
		})
	}
	stop = func() { end(); running.Wait() }
	return cut, stop, err
}

// onEachLoop runs f on every loop and waits until all have.
func (e *engine) onEachLoop(f func(*loopState)) {
	var wg sync.WaitGroup
	for _, ls := range e.loops {
		wg.Add(1)
		ls.lp.Post(func() {
			f(ls)
			ls.log.Flush() // before the caller goes on to log lines of its own
			wg.Done()
		})
	}
	wg.Wait()
}

// pause stops accepting on this loop for the back-off's current pause.
func (ls *loopState) pause() { ls.acceptor.Pause() }

func (e *engine) fail(err error) {
	select {
	case e.fatal <- err:
	default:
	}
}

// acceptBatch is how many clients a loop takes per readiness of the listening socket.
// With EPOLLEXCLUSIVE the kernel wakes a loop that is waiting, that is, an idle one;
// taking one client per wake-up leaves the next to another idle loop, where taking many
// put several streams that start together on one loop while the other idled (4 streams:
// 2241 against 2675 MiB/s, medians of 5 runs, with connections per second unchanged).
// The socket is level-triggered, so clients left waiting wake a loop again at once.
const acceptBatch = 1

// accepted serves the client fd from client, which the loop's acceptor took.
func (ls *loopState) accepted(fd int, client netip.AddrPort) {
	s := ls.e.s
	s.wg.Add(1)
	s.open.Add(1)
	ls.counts.Accepted()
	c := &lconn{ls: ls, s: s, cfd: fd, sfd: -1, start: ls.lp.Now()}
	ls.conns[c] = struct{}{}
	c.accepted(client)
}
