package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/accept"
	"shd-tcp-tools/internal/relay"
)

// Without TLS, listentwo accepts links and clients on the event loops that relay, as
// tcp-pf's loops accept (accept.OnLoop, with the one back-off), not on goroutines: each
// loop takes connections from both listening sockets as raw sockets (accept4), and a link
// runs its handshake, or a client is paired, on the loop that accepted it. A connection
// costs no wake-up of an accepting goroutine, no wait on Go's poller and no hand-over to
// a loop; the standard library never sees it (no registration with its poller,
// getsockname, TCP_NODELAY, which the socket has from the listener already). The room's
// bound holds as on a goroutine: a loop whose accept pushed a link out of the room
// accepts nothing more until that link's loop has closed it (accept.OnLoop.Hold), so
// each loop holds at most one guest beyond the room's capacity.

// acceptOnLoops accepts from ln on every loop of the relay, handing each connection's
// socket and its peer to accepted, on the loop that took it (l, whose acceptor is a);
// fatal gets an error that ends a loop's accepting ("accepting links: ..."). It closes ln:
// the loops accept on a duplicate of its socket, which leaves Go's poller (where every
// connection woke a runtime thread). stop ends the accepting on every loop, waits until
// each has stopped, and closes the duplicate.
func (r *Relay) acceptOnLoops(what string, ln *net.TCPListener, accepted func(l *relay.Loop, a *accept.OnLoop, fd int, peer netip.AddrPort), fatal func(error)) (stop func(), err error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	lfd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { lfd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	ln.Close()
	n := r.loops.Len()
	acceptors := make([]*accept.OnLoop, n)
	for i := range n {
		l := r.loops.At(i)
		var a *accept.OnLoop
		a = accept.NewOnLoop(l.Events(), lfd, accept.LoopConfig{
			Back:      &r.back,
			Exclusive: true,
			Accepted: func(fd int, peer netip.AddrPort) {
				if line := r.back.OK(); line != "" {
					r.cfg.Log.Warnf("accepting %ss: %s", what, line)
				}
				accepted(l, a, fd, peer)
			},
			Log:   func(line string) { r.cfg.Log.Warnf("accepting %ss: %s", what, line) },
			Fatal: func(err error) { fatal(fmt.Errorf("accepting %ss: %w", what, err)) },
		})
		acceptors[i] = a
		l.Post(func() {
			if err := a.Start(); err != nil {
				fatal(fmt.Errorf("accepting %ss: %w", what, err))
			}
		})
	}
	return func() {
		var stopped sync.WaitGroup
		for i, a := range acceptors {
			stopped.Add(1)
			r.loops.At(i).Post(func() {
				a.Stop()
				stopped.Done()
			})
		}
		stopped.Wait()
		unix.Close(lfd)
	}, nil
}

// linkOnLoop is acceptOnLoops' accepted for links: the link's handshake runs on the loop
// that accepted it (shakeOnLoop), and when its entry pushed a guest out of the link room,
// that loop accepts again only once the guest's socket is closed.
func (r *Relay) linkOnLoop(ctx context.Context) func(*relay.Loop, *accept.OnLoop, int, netip.AddrPort) {
	return func(l *relay.Loop, a *accept.OnLoop, fd int, peer netip.AddrPort) {
		pushed := r.shakeOnLoop(ctx, l, true, fd, peer)
		if pushed == nil {
			return
		}
		if release := a.Hold(); !pushed.whenGone(release) {
			release()
		}
	}
}

// clientOnLoop is acceptOnLoops' accepted for clients: one that can be paired is paired
// from the loop (admitClientFD); one that must wait for its first byte waits on a
// goroutine of its own (serveClient).
func (r *Relay) clientOnLoop(ctx context.Context) func(*relay.Loop, *accept.OnLoop, int, netip.AddrPort) {
	return func(l *relay.Loop, _ *accept.OnLoop, fd int, peer netip.AddrPort) {
		serve := r.admitClientFD(ctx, l, fd, peer)
		if serve == nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			serve()
		}()
	}
}
