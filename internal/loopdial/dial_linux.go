// Package loopdial connects to one host's addresses on an event loop without blocking, the
// way net.Dialer connects: the addresses of the first address's family are tried one after
// another; those of the other family start FallbackDelay later (at once when the first
// family has failed) and race them (RFC 6555's "Happy Eyeballs"); the first to connect wins
// and the other attempt is closed. The connect timeout bounds the whole dial, spread over
// the addresses a family has left, at least MinAttempt each, as net.Dialer spreads it.
//
// It is the one dialer of the event-loop engines: tcp-pf's connections and the tunnel's
// service connects both dial through it, and tcppipe's blocking dials through net.Dialer
// follow the same policy.
package loopdial

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/sock"
)

// DefaultFallbackDelay is how long the first family's attempt runs alone before the other
// family's starts, as net.Dialer's default.
const DefaultFallbackDelay = 300 * time.Millisecond

// MinAttempt is the least time one attempt gets of what remains of the timeout, however
// many addresses are left (net.Dialer's "sane minimum").
const MinAttempt = 2 * time.Second

// Events are the events an attempt's socket is registered for, and keeps once connected,
// until its owner changes them: those a relay.Pair wants (edge-triggered).
const Events = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

var errNoAddress = errors.New("no address to connect to")

// Config is how a Dial connects.
type Config struct {
	// Timeout bounds the whole dial, from Start; it must be more than 0.
	Timeout time.Duration
	// FallbackDelay is how long the first family runs alone; 0 means DefaultFallbackDelay.
	FallbackDelay time.Duration
	// Local, when valid, is bound before each connect (addresses of its family only).
	Local netip.Addr
	// Socket opens a non-blocking TCP socket for an address; nil means sock.Socket.
	Socket func(netip.Addr) (int, error)
}

// Handler hears how a Dial goes, on the loop. After Connected or Failed it hears nothing
// more of that Dial.
type Handler interface {
	// AttemptFailed is told of an address that could not be reached, and how long is left
	// of the timeout. A retry shorter than left asks for the same address again after
	// that long (say, when no descriptor was free).
	AttemptFailed(addr netip.AddrPort, err error, left time.Duration) (retry time.Duration)
	// Connected is given the connected socket, still registered with the loop for Events,
	// its events going to the Dial: the owner calls Loop.Handle to take them.
	Connected(fd int, addr netip.AddrPort)
	// Failed is told that no address connected within the timeout; err is the last
	// attempt's failure.
	Failed(err error)
}

// Dial is one connect to a host's addresses. The zero value is idle; a Dial is used on its
// loop only, and may be embedded in its owner (one per connection, no allocation of its own).
type Dial struct {
	lp       *eventloop.Loop
	cfg      *Config
	h        Handler
	addrs    []netip.Addr
	port     uint16
	deadline time.Time
	lanes    [2]lane // the first family's addresses, then the other's
	fallback *eventloop.Timer
	last     error
	running  bool
	input    bool // see Input
}

// lane is one family's attempts, one at a time.
type lane struct {
	d       *Dial
	is4     bool
	next    int // index in d.addrs of the next address to scan from
	cur     int // index in d.addrs of the address tried last
	fd      int // the attempt in flight, -1 for none
	addr    netip.AddrPort
	timer   *eventloop.Timer // the attempt's timeout, or the wait before a retry
	started bool
	done    bool
}

// Start begins connecting to addrs (at least one) on port, on lp; h hears the outcome. A
// Dial that ran before may be started again once it has ended.
func (d *Dial) Start(lp *eventloop.Loop, cfg *Config, h Handler, addrs []netip.Addr, port uint16) {
	*d = Dial{lp: lp, cfg: cfg, h: h, addrs: addrs, port: port, running: true,
		deadline: lp.Now().Add(cfg.Timeout)}
	first := len(addrs) == 0 || addrs[0].Unmap().Is4()
	d.lanes[0] = lane{d: d, is4: first, fd: -1}
	d.lanes[1] = lane{d: d, is4: !first, fd: -1}
	if !d.lanes[1].has() {
		d.lanes[1].done = true
	} else {
		d.fallback = lp.AfterFunc(cmp.Or(cfg.FallbackDelay, DefaultFallbackDelay), func() {
			d.fallback = nil
			d.lanes[1].start()
		})
	}
	d.lanes[0].start()
}

// Running reports whether the dial has not ended yet.
func (d *Dial) Running() bool { return d.running }

// Stop ends a running dial without a word to its handler, closing its attempts.
func (d *Dial) Stop() {
	if !d.running {
		return
	}
	d.running = false
	if d.fallback != nil {
		d.fallback.Stop()
		d.fallback = nil
	}
	for i := range d.lanes {
		d.lanes[i].stop()
	}
}

// has reports whether the lane has an address left to try.
func (l *lane) has() bool { return l.left() > 0 }

// left counts the lane's addresses not tried yet.
func (l *lane) left() int {
	n := 0
	for _, a := range l.d.addrs[l.next:] {
		if a.Unmap().Is4() == l.is4 {
			n++
		}
	}
	return n
}

// start begins the lane's attempts, unless it has none or runs already.
func (l *lane) start() {
	if l.started || l.done || !l.d.running {
		return
	}
	l.started = true
	l.tryNext()
}

// tryNext starts a connect to the lane's next address; when none is left, or the time is
// up, the lane is done.
func (l *lane) tryNext() {
	d := l.d
	for d.running {
		left := l.left()
		remaining := d.deadline.Sub(d.lp.Now())
		if left == 0 || remaining <= 0 {
			switch {
			case left > 0:
				d.last = unix.ETIMEDOUT
			case d.last == nil:
				d.last = errNoAddress
			}
			l.finish()
			return
		}
		for d.addrs[l.next].Unmap().Is4() != l.is4 {
			l.next++
		}
		l.cur, l.next = l.next, l.next+1
		l.addr = netip.AddrPortFrom(d.addrs[l.cur].Unmap(), d.port)
		if err := l.connect(); err != nil {
			if l.failed(err) {
				return // a retry waits
			}
			continue
		}
		wait := remaining / time.Duration(left)
		if wait < MinAttempt {
			wait = min(MinAttempt, remaining)
		}
		l.timer = d.lp.AfterFunc(wait, func() {
			l.timer = nil
			l.closeFD()
			if !l.failed(unix.ETIMEDOUT) {
				l.tryNext()
			}
		})
		return
	}
}

// failed tells the handler of the failed attempt; it reports true when a retry of the
// same address is scheduled.
func (l *lane) failed(err error) bool {
	d := l.d
	d.last = err
	left := d.deadline.Sub(d.lp.Now())
	if retry := d.h.AttemptFailed(l.addr, err, left); retry > 0 && retry < left && d.running {
		l.next = l.cur // the same address again
		l.timer = d.lp.AfterFunc(retry, func() {
			l.timer = nil
			l.tryNext()
		})
		return true
	}
	return false
}

// finish ends the lane: the other family starts now if it waited, and when both are done
// the dial has failed.
func (l *lane) finish() {
	d := l.d
	l.done = true
	other := &d.lanes[0]
	if other == l {
		other = &d.lanes[1]
	}
	if !other.done {
		if d.fallback != nil {
			d.fallback.Stop()
			d.fallback = nil
		}
		other.start()
		return
	}
	d.running = false
	d.h.Failed(d.last)
}

// connect opens a socket and starts a non-blocking connect to the lane's address.
func (l *lane) connect() error {
	d := l.d
	if loc := d.cfg.Local; loc.IsValid() && loc.Is4() != l.addr.Addr().Is4() {
		return errors.New("address family differs from the local address (INADDR_DEFAULT)")
	}
	socket := sock.Socket
	if d.cfg.Socket != nil {
		socket = d.cfg.Socket
	}
	fd, err := socket(l.addr.Addr())
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	fail := func(call string, err error) error {
		unix.Close(fd)
		return os.NewSyscallError(call, err)
	}
	if err := sock.SetNoDelay(fd); err != nil {
		return fail("setsockopt", err)
	}
	if loc := d.cfg.Local; loc.IsValid() {
		if err := sock.Bind(fd, netip.AddrPortFrom(loc, 0)); err != nil {
			return fail("bind", err)
		}
	}
	if err := sock.Connect(fd, l.addr); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fail("connect", err)
	}
	if err := d.lp.Add(fd, Events, l.ready); err != nil {
		return fail("epoll_ctl", err)
	}
	l.fd = fd
	return nil
}

// ready handles the events of the lane's attempt in flight.
func (l *lane) ready(ev uint32) {
	d := l.d
	if l.fd < 0 || !d.running {
		return
	}
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		if ev&unix.EPOLLOUT == 0 {
			return
		}
		// writable without an error: connected (no getsockopt on the common path)
	} else if err := sock.Error(l.fd); err != nil {
		l.stopTimer()
		l.closeFD()
		if !l.failed(err) {
			l.tryNext()
		}
		return
	}
	fd, addr := l.fd, l.addr
	l.stopTimer()
	l.fd = -1 // the handler's now
	d.Stop()
	d.input = ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	d.h.Connected(fd, addr)
}

// Input reports, while the handler's Connected runs, whether the event that told the Dial
// its socket connected reported input or an end too, which nobody has read. When it did
// not, anything the socket gets from now on brings an event of its own (the registration
// is edge-triggered), so a first read that finds less than it asked for has taken all
// there is.
func (d *Dial) Input() bool { return d.input }

func (l *lane) stopTimer() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
}

func (l *lane) closeFD() {
	if l.fd >= 0 {
		_ = l.d.lp.CloseFD(l.fd)
		l.fd = -1
	}
}

// stop ends the lane's attempt in flight or its wait.
func (l *lane) stop() {
	l.stopTimer()
	l.closeFD()
	l.done = true
}

// DialConn runs a Dial on lp for a goroutine that needs a *net.TCPConn (a relay in user
// space, such as a TLS link's): it waits for the outcome and hands the connected socket
// over from lp to Go's poller. The end of ctx stops the dial. It is the loops' one dialer
// used from outside them, so a blocking caller connects exactly as the loops do.
func DialConn(ctx context.Context, lp *eventloop.Loop, cfg *Config, addrs []netip.Addr, port uint16) (*net.TCPConn, error) {
	w := &connWaiter{lp: lp, done: make(chan connResult, 1)}
	d := new(Dial)
	lp.Post(func() { d.Start(lp, cfg, w, addrs, port) })
	var r connResult
	select {
	case r = <-w.done:
	case <-ctx.Done():
		lp.Post(func() {
			if d.Running() {
				d.Stop()
				w.done <- connResult{fd: -1, err: ctx.Err()}
			}
		})
		if r = <-w.done; r.err == nil { // connected just as ctx ended
			unix.Close(r.fd)
			r = connResult{fd: -1, err: ctx.Err()}
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	f := os.NewFile(uintptr(r.fd), "tcp")
	defer f.Close()
	c, err := net.FileConn(f) // a duplicate, in Go's poller
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

type connResult struct {
	fd  int
	err error
}

// connWaiter is DialConn's Handler: it takes the socket out of the loop and sends it on.
type connWaiter struct {
	lp   *eventloop.Loop
	done chan connResult
}

func (w *connWaiter) AttemptFailed(netip.AddrPort, error, time.Duration) time.Duration { return 0 }

func (w *connWaiter) Connected(fd int, _ netip.AddrPort) {
	w.lp.Remove(fd)
	w.done <- connResult{fd: fd}
}

func (w *connWaiter) Failed(err error) { w.done <- connResult{fd: -1, err: err} }
