package accept

import (
	"errors"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/sock"
)

// OnLoop accepts connections from one listening socket on one event loop: it waits for
// the socket's readiness with the loop's other descriptors, takes Batch connections per
// readiness with accept4(2) (non-blocking, close-on-exec), and hands each, as a raw
// socket with its peer's address, to Accepted, on the loop. A shortage of descriptors or
// memory is recorded in Back, which may be shared by several loops and listeners, and
// pauses this loop's accepting for the back-off's pause (a loop timer, no goroutine);
// Hold pauses it until a condition the caller waits for is met. Several OnLoops, one per
// loop, may accept from one socket (Exclusive: the kernel wakes one waiting loop per
// connection). Its methods run on the loop, but for the release that Hold returns.
type OnLoop struct {
	lp  *eventloop.Loop
	lfd int
	cfg LoopConfig

	started    bool // between Start and Stop
	registered bool // in the loop's epoll set
	holds      int  // Holds not released yet
	paused     *eventloop.Timer
}

// LoopConfig is what an OnLoop does with what it accepts.
type LoopConfig struct {
	// Back is the back-off shared by everything the process accepts with; it must be set.
	Back *Backoff
	// Now is the back-off's clock; nil means the loop's Now.
	Now func() time.Time
	// Exclusive registers the socket with EPOLLEXCLUSIVE, for several loops that accept
	// from it.
	Exclusive bool
	// Batch is the most connections taken per readiness; zero means 1, which leaves the
	// next connection to another loop that waits (the socket is level-triggered, so
	// connections left waiting wake a loop again at once).
	Batch int
	// Accepted takes the connection fd from peer; it runs on the loop and owns fd.
	Accepted func(fd int, peer netip.AddrPort)
	// Log, when set, gets the back-off's lines (Backoff.Fail's), for the caller to log.
	Log func(line string)
	// Fatal gets an error that ends accepting on this loop: accept(2) failing other than
	// for a shortage or a connection's own error, or the socket's registration failing.
	// Accepting has stopped when it is called.
	Fatal func(err error)
}

// NewOnLoop returns an OnLoop that will accept from the listening socket lfd on lp once
// started. The socket stays the caller's, who closes it after Stop.
func NewOnLoop(lp *eventloop.Loop, lfd int, cfg LoopConfig) *OnLoop {
	if cfg.Batch <= 0 {
		cfg.Batch = 1
	}
	if cfg.Now == nil {
		cfg.Now = lp.Now
	}
	return &OnLoop{lp: lp, lfd: lfd, cfg: cfg}
}

// Start begins accepting; it runs on the loop. An error is the registration's.
func (a *OnLoop) Start() error {
	a.started = true
	return a.watch()
}

// Stop ends accepting for good (a pause or a hold does not restart it); it runs on the
// loop. Connections accepted already are the caller's.
func (a *OnLoop) Stop() {
	a.started = false
	if a.paused != nil {
		a.paused.Stop()
		a.paused = nil
	}
	a.unwatch()
}

// Pause stops accepting on this loop for the back-off's current pause, if it has one: the
// caller recorded a shortage that a new connection would meet too (a dial out of
// descriptors, say). It runs on the loop.
func (a *OnLoop) Pause() {
	d := a.cfg.Back.Pause(a.cfg.Now())
	if d <= 0 || !a.registered {
		return
	}
	a.unwatch()
	a.paused = a.lp.AfterFunc(d, func() {
		a.paused = nil
		a.rewatch()
	})
}

// Hold stops accepting on this loop until release is called, from any goroutine, once:
// for a caller that may accept the next connection only after something elsewhere has
// happened (a connection it had closed on another loop). It runs on the loop.
func (a *OnLoop) Hold() (release func()) {
	a.holds++
	a.unwatch()
	return func() {
		a.lp.Post(func() {
			a.holds--
			a.rewatch()
		})
	}
}

// watch registers the socket unless it is registered already, paused or held.
func (a *OnLoop) watch() error {
	if !a.started || a.registered || a.paused != nil || a.holds > 0 {
		return nil
	}
	events := uint32(unix.EPOLLIN)
	if a.cfg.Exclusive {
		events |= unix.EPOLLEXCLUSIVE
	}
	if err := a.lp.Add(a.lfd, events, a.ready); err != nil {
		a.started = false
		return err
	}
	a.registered = true
	return nil
}

// rewatch is watch after a pause or a hold ends; a failure ends accepting (Fatal).
func (a *OnLoop) rewatch() {
	if err := a.watch(); err != nil && a.cfg.Fatal != nil {
		a.cfg.Fatal(err)
	}
}

func (a *OnLoop) unwatch() {
	if a.registered {
		a.registered = false
		a.lp.Remove(a.lfd)
	}
}

// ready takes waiting connections, Batch at most, while accepting is not paused or held.
func (a *OnLoop) ready(uint32) {
	for range a.cfg.Batch {
		if !a.registered {
			return
		}
		fd, peer, err := sock.Accept(a.lfd)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			err = os.NewSyscallError("accept4", err)
			switch Classify(err) {
			case Again:
				continue
			case Short:
				if line := a.cfg.Back.Fail(a.cfg.Now(), err); line != "" && a.cfg.Log != nil {
					a.cfg.Log(line)
				}
				a.Pause()
			default:
				a.Stop()
				if a.cfg.Fatal != nil {
					a.cfg.Fatal(err)
				}
			}
			return
		}
		a.cfg.Accepted(fd, peer)
	}
}
