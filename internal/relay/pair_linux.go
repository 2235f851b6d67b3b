package relay

import (
	"cmp"
	"errors"
	"math"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/ratelimit"
	"shd-tcp-tools/internal/sock"
)

// A Pair relays two connected non-blocking TCP sockets on an event loop: the loop's engine
// for socket-to-socket bytes. It costs no goroutine; every method runs on the loop. Its
// close modes, acknowledged close and reset passthrough are Join's.
//
// The pair owns both descriptors from StartPair on, and closes them when it ends.

// PairEvents are the events a Pair's descriptors are registered for (edge-triggered).
const PairEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

const (
	// pumpBudget is how many steps (a splice into the pipe or out of it) one direction
	// takes before the loop turns to its other connections: at most 1 MiB moved. With one
	// loop relaying two bulk streams, short connections through it measured p50/p99 of
	// 3.0/7.6 ms with 2 steps, 5.1/10.5 ms with 4, 8.4/26.5 ms with 16, and 9.1/57 ms with
	// no budget (the goroutine engine before: 5.0/17.9 ms); the streams kept their rate.
	// A direction that spends it yields (Loop.Yield): one such turn runs per round.
	pumpBudget = 2

	// pumpStep is the most bytes one step moves without a rate limit.
	pumpStep = 1 << 20
)

// PairOptions choose how a Pair relays and ends. The zero value closes both sockets when
// either side ends, with no rate limit and no idle timeout.
type PairOptions struct {
	// HalfClose passes an EOF from one side on as a half-close (FIN) and keeps the other
	// direction flowing until it ends too, as Options.HalfClose does for Join.
	HalfClose bool
	// Pace limits each direction ([0] client to server, [1] server to client); nil means
	// unlimited. A Bucket may have paid for bytes sent before the relay (tcp-pf's --insert).
	Pace [2]*ratelimit.Bucket
	// IdleTimeout cuts the pair when neither direction has moved a byte for this long;
	// zero means never.
	IdleTimeout time.Duration
	// Progress, when set, is told on the loop of every write (up: client to server).
	Progress func(up bool, n int64)
	// OnEnd is called on the loop once both sockets are closed, with the bytes each way
	// and the end (Result.Duration counts from StartPair).
	OnEnd func(Result)
	// Quiet says which sockets ([0] client, [1] server) are registered with the loop
	// already and have had no event that reported input or an end: anything they get
	// brings an event of its own, so StartPair does not read them before one comes.
	Quiet [2]bool
	// NoPipes moves every step through user space, as when no splice pipe can be had (a
	// test seam for running out of descriptors).
	NoPipes bool

	// stall replaces SettleTimeout (a test seam).
	stall time.Duration
}

// Pair states.
const (
	pairRelaying = iota
	pairClosing  // waiting for the peers to acknowledge before the close
	pairClosed
)

// Pair is one relayed pair of sockets on a loop. See StartPair.
type Pair struct {
	lp    *eventloop.Loop
	o     PairOptions
	fd    [2]int // client, server
	start time.Time
	state int

	dirs       [2]pdir
	lastActive time.Time
	idle       *eventloop.Timer
	timer      *eventloop.Timer // the settle poll

	policy   closing
	clock    settleClock
	closedAt time.Time // the loop's round in which the close phase began
}

// pdir is one direction of a Pair.
type pdir struct {
	src, dst int
	mv       mover
	n        int64
	srcEOF   bool // src ended; what the mover holds still goes out
	stopped  bool
	pace     *ratelimit.Bucket
	waiting  bool             // for resume: the rate limit, or the next round after a spent budget
	resume   *eventloop.Timer // made on first use and reset after, so a wait allocates nothing
	turn     func()           // the resume of a yielded turn, made once (Loop.Yield)
}

// StartPair starts relaying the connected non-blocking TCP sockets client and server on
// lp, and must be called on lp. A descriptor registered with lp already (for PairEvents)
// keeps its registration and gets the pair's callback; one that is not is added. On an
// error nothing was started and the caller still owns both descriptors; otherwise the
// pair owns them and calls o.OnEnd once it has closed them.
func StartPair(lp *eventloop.Loop, client, server int, o PairOptions) (*Pair, error) {
	p := &Pair{lp: lp, o: o, fd: [2]int{client, server}, policy: closing{halfClose: o.HalfClose}}
	p.dirs[up] = pdir{src: client, dst: server, pace: o.Pace[up]}
	p.dirs[down] = pdir{src: server, dst: client, pace: o.Pace[down]}
	for i := range p.dirs {
		p.dirs[i].mv.noPipes = o.NoPipes
	}
	var added [2]bool
	for i, ready := range [2]func(uint32){p.clientReady, p.serverReady} {
		if lp.Handle(p.fd[i], ready) {
			continue
		}
		added[i] = true
		if err := lp.Add(p.fd[i], PairEvents, ready); err != nil {
			if i == 1 {
				lp.Remove(client)
			}
			return nil, err
		}
	}
	p.start = lp.Now()
	p.lastActive = p.start
	if o.IdleTimeout > 0 {
		p.idle = lp.AfterFunc(o.IdleTimeout, p.checkIdle)
	}
	// A socket added just now has had no event read: edge-triggered epoll reports what it
	// holds already (its end too) at the next wait, and what comes later as it comes, so a
	// first read that finds less than it asked for has taken all there is, as in answer to
	// an event: the pump does not ask again to find nothing (one recvfrom a short
	// connection). A quiet one (PairOptions.Quiet) holds nothing to read before its next
	// event; one registered before may have had events that nobody read.
	for i := range p.dirs {
		if !o.Quiet[i] || added[i] {
			p.pump(i, added[i])
		}
	}
	return p, nil
}

// Closing reports whether the pair has stopped relaying and is closing (or closed).
func (p *Pair) Closing() bool { return p.state != pairRelaying }

// Abort ends the pair on the owner's decision (a stop, a cut): both sockets are reset and
// the end is end. A pair waiting for its peers' acknowledgements closes at once.
func (p *Pair) Abort(end string) {
	switch p.state {
	case pairRelaying:
		p.do(p.policy.abort(end))
	case pairClosing:
		p.closeNow()
	}
}

func (p *Pair) clientReady(ev uint32) { p.ready(ev, up) }
func (p *Pair) serverReady(ev uint32) { p.ready(ev, down) }

// ready handles the events of the socket that is the source of direction in.
func (p *Pair) ready(ev uint32, in int) {
	switch p.state {
	case pairRelaying:
		const ends = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
		if ev&(unix.EPOLLIN|ends) != 0 {
			p.pump(in, ev&ends == 0)
		}
		// The socket takes more: that matters to the other direction only when it holds
		// bytes the socket did not take (or to find the socket's error). Otherwise it
		// waits for its own source, and a look there would find nothing.
		if ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0 || ev&unix.EPOLLOUT != 0 && p.dirs[1-in].mv.pending() > 0 {
			p.pump(1-in, false)
		}
	case pairClosing:
		// The answer a settle waits for is news from a socket being settled, and it comes
		// after that socket's FIN went out, so in a later round: events collected with the
		// one that began the close phase are older than the FIN, and a look then would
		// find it unacknowledged.
		if p.policy.settles(in) && !p.lp.Now().Equal(p.closedAt) {
			quiet := -1 // an event that reports no input: that socket has none to discard
			if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
				quiet = in
			}
			p.settle(false, quiet)
		}
	}
}

func (p *Pair) checkIdle() {
	p.idle = nil
	if p.state != pairRelaying {
		return
	}
	quiet := p.lp.Now().Sub(p.lastActive)
	if quiet >= p.o.IdleTimeout {
		p.Abort(EndIdle)
		return
	}
	p.idle = p.lp.AfterFunc(p.o.IdleTimeout-quiet, p.checkIdle)
}

// pump moves bytes one way until the source has none, the destination is full, the rate
// limit makes it wait, or the direction ends. fresh says pump runs for an event of the
// source that reported no end: then a read that finds less than it asked for has taken
// all there is, and the next byte, or the end, brings another event (the sockets are
// edge-triggered), so pump stops there instead of asking again for nothing. Elsewhere
// (the start, a resume, the destination's event) events of the source may have passed
// unread, and pump reads until the source has nothing (EAGAIN).
func (p *Pair) pump(i int, fresh bool) {
	d := &p.dirs[i]
	for budget := pumpBudget; p.state == pairRelaying && !d.stopped && !d.waiting; budget-- {
		if budget == 0 {
			// A stream that never runs dry would keep the loop from its other
			// connections: go on in the next round.
			p.pumpLater(i, 0)
			return
		}
		if d.mv.pending() > 0 {
			m, err := d.mv.drain(d.dst)
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			if err != nil {
				p.dirFailed(err)
				return
			}
			p.moved(i, m)
			continue
		}
		if d.srcEOF {
			p.dirFinished(i)
			return
		}
		most, delay := d.pace.Reserve(p.lp.Now(), pumpStep)
		if delay > 0 {
			p.pumpLater(i, delay)
			return
		}
		n, w, err := d.mv.fill(d.src, d.dst, p.lp.Scratch(), most)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil:
			p.dirFailed(err)
			return
		case n == 0 && p.resetAtEOF(i):
			p.dirFailed(unix.ECONNRESET)
			return
		case n == 0:
			d.srcEOF = true
		default:
			d.pace.Used(n)
			if w > 0 {
				p.moved(i, w)
			}
			if fresh && d.mv.drained && d.mv.pending() == 0 {
				return
			}
		}
	}
}

// pumpLater has direction i pumped again after delay; 0 yields the loop (Loop.Yield): the
// turn runs in a later round, behind the turns other directions yielded before.
func (p *Pair) pumpLater(i int, delay time.Duration) {
	d := &p.dirs[i]
	d.waiting = true
	if delay <= 0 {
		if d.turn == nil {
			d.turn = func() {
				d.waiting = false
				p.pump(i, false)
			}
		}
		p.lp.Yield(d.turn)
		return
	}
	if d.resume != nil {
		d.resume.Reset(delay)
		return
	}
	d.resume = p.lp.AfterFunc(delay, func() {
		d.waiting = false
		p.pump(i, false)
	})
}

// moved counts m bytes written by direction i.
func (p *Pair) moved(i, m int) {
	p.dirs[i].n += int64(m)
	p.lastActive = p.lp.Now()
	if p.o.Progress != nil {
		p.o.Progress(i == up, int64(m))
	}
}

// resetAtEOF reports whether the end direction i read from its source is the peer's reset
// rather than its FIN: the kernel answers a reset with ECONNRESET once and with 0 after,
// so once the error went with another call (the other direction's write, say), the reset
// reads as an EOF; the socket's state tells them apart (a FIN leaves it CLOSE_WAIT). It
// is closed without a reset too once both FINs went, so a source that the other
// direction has shut down already counts as ended cleanly.
func (p *Pair) resetAtEOF(i int) bool {
	return !p.dirs[1-i].stopped && sock.PeerReset(p.dirs[i].src)
}

// dirFinished is direction i's clean end: its source sent EOF and all of it went out.
func (p *Pair) dirFinished(i int) {
	p.dirs[i].stopped = true
	p.do(p.policy.finished(i))
}

// dirFailed is a direction's failure; which side (if any) was reset is the kernel's word.
func (p *Pair) dirFailed(err error) {
	resetBy := -1
	switch {
	case p.policy.stopping:
	case sock.PeerReset(p.fd[up]):
		resetBy = up
	case sock.PeerReset(p.fd[down]):
		resetBy = down
	}
	p.do(p.policy.failed(resetBy, "error: "+err.Error()))
}

// do carries out the close policy's step.
func (p *Pair) do(step closeStep) {
	if step.shutdown >= 0 {
		_ = sock.ShutdownWrite(p.fd[step.shutdown])
	}
	if step.resetNow >= 0 {
		sock.Linger0(p.fd[step.resetNow])
	}
	if step.stop {
		p.closePhase()
	}
}

// closePhase stops both directions and closes the sockets, after waiting (bounded) for a
// peer we stopped reading to acknowledge everything written to it, as Join does.
func (p *Pair) closePhase() {
	p.state = pairClosing
	for i := range p.dirs {
		d := &p.dirs[i]
		d.stopped = true
		if d.resume != nil {
			d.resume.Stop()
		}
		d.waiting = false
		d.mv.release() // bytes still in a stopped direction's pipe are dropped
	}
	if p.idle != nil {
		p.idle.Stop()
		p.idle = nil
	}
	p.closedAt = p.lp.Now()
	p.clock = newSettleClock(p.lp.Now(), cmp.Or(p.o.stall, SettleTimeout), pairSettleFirst)
	p.settle(true, -1)
}

// settle closes once no side that the policy settles has unacknowledged bytes (discarding
// what it sends meanwhile), or when the settle clock gives up. It runs when the close phase
// starts (first), on the events of a settled socket after that (quiet is the side whose
// event reported no input, or -1), and on the clock's timer in case no event comes.
func (p *Pair) settle(first bool, quiet int) {
	if p.timer != nil {
		p.timer.Stop()
	}
	waiting, unacked := false, 0
	for i, fd := range p.fd {
		if !p.policy.settles(i) {
			continue
		}
		if first {
			// The FIN to this side went out just now. Its acknowledgement changes the
			// socket's state, which brings an event, so the first look waits for the
			// peer's answer: asked now, a network peer has not answered, and on loopback
			// a peer in interactive mode (a request and its reply) delays the ACK of our
			// FIN until it sends its own.
			waiting, unacked = true, unknownUnacked
			continue
		}
		// SIOCOUTQ counts the FIN too: 0 is the acknowledgement of everything.
		n := sock.Unacked(fd)
		if i != quiet || n <= 0 {
			sock.Discard(fd) // before the close, and while waiting: input would hold it up
		}
		if n > 0 {
			waiting, unacked = true, unacked+n
		}
	}
	wait, ok := p.clock.next(p.lp.Now(), unacked)
	if !waiting || !ok {
		p.closeNow()
		return
	}
	if p.timer == nil {
		p.timer = p.lp.AfterFunc(wait, func() { p.settle(false, -1) })
		return
	}
	p.timer.Reset(wait)
}

// pairSettleFirst is the first pause of a Pair's settle clock. A Pair looks when a settled
// socket has an event, and the acknowledgement of its FIN always brings one (the socket
// changes state), so the timer is only the fallback that notes progress for the stall
// limit; at Settle's 100 µs it looked again about half a time per short connection under
// load, for nothing.
const pairSettleFirst = 10 * time.Millisecond

// unknownUnacked is the settle clock's count at the first look, made before asking: any
// count read later is progress.
const unknownUnacked = math.MaxInt

// closeNow closes both sockets and reports the end. After an abort (an error, the idle
// timeout, a cut) both sockets are reset, as Join does, so that no peer takes the end of
// a cut transfer for a complete one.
func (p *Pair) closeNow() {
	if p.timer != nil {
		p.timer.Stop()
	}
	for i, fd := range p.fd {
		if p.policy.resetsAtClose(i) {
			sock.Linger0(fd)
		}
	}
	for i := range p.dirs {
		p.dirs[i].mv.release()
	}
	_ = p.lp.CloseFD(p.fd[up])
	_ = p.lp.CloseFD(p.fd[down])
	p.state = pairClosed
	if p.o.OnEnd != nil {
		p.o.OnEnd(Result{Up: p.dirs[up].n, Down: p.dirs[down].n, Duration: p.lp.Now().Sub(p.start), End: p.policy.end,
			Spliced: p.dirs[up].mv.spliced + p.dirs[down].mv.spliced})
	}
}
