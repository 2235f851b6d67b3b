package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
)

// A plain link's handshake runs on the event loop that will watch the link while it is
// idle and relay it once a client takes it: the loop that accepted the link (see
// acceptOnLoops) makes it a guest of the link room and starts it there (a listener that
// is not a *net.TCPListener: the accepting goroutine takes the socket from the standard
// library and posts it to the loop with the fewest pairs); the loop waits for its first
// byte, drives the handshake's machine (serverShake) on the bytes as
// they come, with one timer for its deadlines, and puts the link in the pool without
// another hand-over. A link costs no goroutine, no wake-up of one and no deadline on Go's
// poller; the room pushes such a guest out by resetting its socket and posting its end to
// the loop (kick).

// linkShake is one plain link in its handshake on a loop. Its fields are the loop's, but
// for those set before it is posted there.
type linkShake struct {
	r      *Relay
	ctx    context.Context
	l      *relay.Loop
	lp     *eventloop.Loop
	fd     int
	id     uint64
	addr   string
	g      *guest
	openBy time.Time    // when the opening is due (FirstByte after the accept)
	s      *serverShake // nil until the first byte has come
	secret []byte       // what the link proves
	timer  *eventloop.Timer
	stop   func() bool // ends the watch of ctx
	over   bool
	closed *signal // raised once the loop has closed the socket (or handed it on)
}

// shakeOnLoop serves the plain link fd from peer on the event loop l: see linkShake.
// here: the caller runs on l (an accept there), which reads what has come (the opening,
// with deferred accepts), enters the link in the room by it, and starts the link at once;
// otherwise the caller, the only goroutine that enters the link room, peeks at the first
// bytes, and the start is posted. It returns the guest the link's entry pushed out of the
// room, if any, whose socket may not be closed yet (see guest.gone and guest.whenGone).
func (r *Relay) shakeOnLoop(ctx context.Context, l *relay.Loop, here bool, fd int, peer netip.AddrPort) (pushed *guest) {
	id := r.links.Add(1)
	ls := &linkShake{r: r, ctx: ctx, l: l, lp: l.Events(), fd: fd, id: id, addr: peer.String(),
		openBy: time.Now().Add(r.cfg.FirstByte), closed: new(signal)}
	r.wg.Add(1) // until the link is refused or pooled, which Serve waits for
	var first []byte
	var ferr error
	if here {
		first = ls.lp.Scratch()[:maxLine]
		n, err := sock.Recv(fd, first, 0)
		first = first[:max(n, 0)]
		if ferr = err; errors.Is(err, unix.EAGAIN) {
			first, ferr = nil, nil // nothing yet: the loop reads it when it comes
		}
	} else {
		var peeked [len(opening)]byte
		n, err := sock.Recv(fd, peeked[:], unix.MSG_PEEK)
		if err != nil {
			n = 0
		}
		first = peeked[:n]
	}
	cl := r.linkClass(first[:min(len(first), len(opening))])
	// A kick from another loop's accept, as soon as the link is in the room, is posted to
	// l: it comes after the start, which runs now on l or was posted before it.
	ls.g, pushed = r.linkRoom.enterFD(fd, prefixOf(peer.Addr()), cl, ls.kick, ls.closed)
	if here {
		ls.start(first, ferr)
	} else {
		l.Post(func() { ls.start(nil, nil) })
	}
	return pushed
}

// kick pushes the link out of the room (with the room locked, the socket still open): a
// reset now, the close on the loop.
func (ls *linkShake) kick() {
	sock.Linger0(ls.fd)
	ls.l.Post(func() { ls.fail(errPushedOut(silent)) }) // fail names the class it had
}

// start registers the link on the loop and reads what has come already. first is what
// a read on the loop took before the link entered the room (nil: nothing was read), and
// ferr that read's error.
func (ls *linkShake) start(first []byte, ferr error) {
	if ls.over {
		return
	}
	if err := ls.lp.Add(ls.fd, relay.PairEvents, ls.ready); err != nil {
		ls.fail(err)
		return
	}
	ls.timer = ls.lp.AfterFunc(ls.openBy.Sub(ls.lp.Now()), ls.expired)
	ls.stop = context.AfterFunc(ls.ctx, func() { ls.lp.Post(func() { ls.fail(ls.ctx.Err()) }) })
	if (first != nil || ferr != nil) && !ls.took(first, ferr) {
		return
	}
	ls.read()
}

// ready is the link's readiness during the handshake.
func (ls *linkShake) ready(ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ls.read()
	}
}

// read takes what has come on the link, until it would wait or the machine waits for the
// peer's answer to what it sent (the reply comes with an event of its own).
func (ls *linkShake) read() {
	for !ls.over {
		room := maxLine // the first read: the opening, and what came after it with it
		if ls.s != nil {
			room = ls.s.room()
		}
		buf := ls.lp.Scratch()[:room]
		n, err := sock.Recv(ls.fd, buf, 0)
		if !ls.took(buf[:max(n, 0)], err) {
			return
		}
	}
}

// took handles what one read of the link gave: got, or err. It reports whether to read
// again (unless the link is over by then).
func (ls *linkShake) took(got []byte, err error) bool {
	switch {
	case errors.Is(err, unix.EAGAIN):
		return false
	case ls.s == nil && (err != nil || len(got) == 0):
		ls.fail(errClosedEarly)
		return false
	case err != nil:
		ls.fail(ls.s.cut(os.NewSyscallError("read", err)))
		return false
	case len(got) == 0:
		ls.fail(ls.s.cut(io.EOF))
		return false
	}
	if ls.s == nil && !ls.spoke(got) {
		return false
	}
	due := ls.s.due()
	send, done, ferr := ls.s.feed(got)
	var pushed errPushedOut
	if errors.As(ferr, &pushed) {
		// The room pushed it out (its reset is posted): no ERR line, which connecttwo
		// would take for a refusal and back off for, as from a room that closes its
		// guests itself.
		send = nil
	}
	if len(send) > 0 {
		if werr := sendLine(ls.fd, send); werr != nil && ferr == nil {
			ferr = ls.s.sendFailed(werr)
		}
	}
	switch {
	case ferr != nil:
		ls.fail(ferr)
	case done:
		ls.up()
	case !ls.s.due().Equal(due): // the greeting is out: the reply takes a round trip
		ls.timer.Reset(ls.s.due().Sub(ls.lp.Now()))
		return false
	}
	return true
}

// spoke records the link's first bytes, first: it spoke. A plain relay's link that opens
// with TLS gets the words for that in the clear, as refusePlain gives them. Otherwise the
// handshake's machine starts; false when the link was refused.
func (ls *linkShake) spoke(first []byte) bool {
	r := ls.r
	switch {
	case !r.linkRoom.advance(ls.g, spoke):
		ls.fail(errPushedOut(silent))
		return false
	case looksTLS(first):
		_, _ = sock.Send(ls.fd, []byte("ERR "+errTLSAgentOnly+"\n"))
		ls.fail(errors.New(errTLSAgentOnly))
		return false
	}
	ls.secret = r.secret.get()
	ls.s = newServerShake(ls.lp.Now(), r.linkParams(ls.secret, ls.openBy, nil), r.linkHooks(ls.g))
	ls.timer.Reset(ls.s.due().Sub(ls.lp.Now()))
	return true
}

// expired ends a link that has not sent its first byte, or the line it owes, in time.
func (ls *linkShake) expired() {
	if ls.s == nil {
		ls.fail(fmt.Errorf("%w within %v", errSilent, ls.r.cfg.FirstByte))
		return
	}
	ls.fail(ls.s.cut(os.ErrDeadlineExceeded))
}

// end stops the link's timer and its watch of ctx; it reports false when ctx has ended.
func (ls *linkShake) end() bool {
	ls.over = true
	if ls.timer != nil {
		ls.timer.Stop()
	}
	if ls.stop != nil {
		return ls.stop()
	}
	return ls.ctx.Err() == nil
}

// fail refuses the link for err (a push out of the room wins over what the link was
// doing then): it leaves the room, then its socket is reset and closed, and it is
// counted and logged.
func (ls *linkShake) fail(err error) {
	if ls.over {
		return
	}
	r := ls.r
	ls.end()
	r.linkRoom.leave(ls.g) // before the close: the room may look at its socket until then
	if pushed, ok := r.linkRoom.pushedOut(ls.g); ok {
		err = errPushedOut(pushed)
	}
	sock.Linger0(ls.fd)
	ls.lp.CloseFD(ls.fd)
	ls.closed.raise()
	r.linkRefused(ls.ctx, ls.id, ls.addr, ls.g, err)
	r.wg.Done()
}

// up puts the link, whose verdict is out, in the pool: to a waiting client, or idle and
// watched on this loop.
func (ls *linkShake) up() {
	r := ls.r
	if !ls.end() { // the relay stops: the link never joined
		r.pool.unreserve()
		ls.over = false
		ls.fail(ls.ctx.Err())
		return
	}
	ls.closed.raise() // out of the room: nobody waits for it
	l := &idleLink{id: ls.id, fd: ls.fd, loop: ls.l, addr: ls.addr, proved: ls.secret}
	r.linkUp(l) // before a waiting client that takes it logs its open
	r.pool.put(l, r.watchOnLoop)
	r.wg.Done()
}
