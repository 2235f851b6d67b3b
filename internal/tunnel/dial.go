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

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/loopdial"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
)

// A plain link of connecttwo is opened on the event loop it will wait on: a non-blocking
// connect to the relay (loopdial, the loops' one dialer, as the service's connect), then
// the handshake, its machine (clientShake, the same as a TLS link's on its goroutine)
// driven on the bytes as they come, under one timer. Once the verdict is in, the link
// waits idle on the same loop (take.go): no goroutine, no poller of the net package and no
// hand-over between them. Its slot (loopSlot, below) runs on the loops too.

// linkSocket opens a link's socket: non-blocking, with the keepalive that notices a relay
// gone without a FIN (probes after 30 s idle, every 10 s, 3 tries), as setKeepAlive gives
// a TLS link; loopdial sets no delay.
func linkSocket(a netip.Addr) (int, error) {
	fd, err := sock.Socket(a)
	if err != nil {
		return -1, err
	}
	if err := sock.SetKeepAliveProbes(fd, 30*time.Second, 10*time.Second, 3); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// open connects the link to the relay and runs its handshake on the loop (see the top of
// this file); it must run on the loop, and the slot holds one of the maxOpening places
// (a.opening), which the handshake's end gives back, and has counted the link connecting.
func (ll *loopLink) open() {
	a := ll.a
	ll.stop = context.AfterFunc(ll.ctx, func() { ll.lp.Post(ll.cut) })
	ll.step = linkConnecting
	ll.dialCfg = loopdial.Config{Timeout: a.dialTimeout(), Local: a.cfg.Local, Socket: linkSocket}
	ll.conn.Start(ll.lp, &ll.dialCfg, ll, ll.relayAddrs, uint16(a.cfg.Relay.Port))
}

// linkConnected sends the opening on the link connected to the relay at addr.
func (ll *loopLink) linkConnected(fd int, addr netip.AddrPort) {
	a := ll.a
	ll.fd = fd
	ll.relay = addr
	ll.lp.Handle(fd, ll.linkReady)
	ll.timer = ll.lp.AfterFunc(a.cfg.HandshakeTimeout, ll.handshakeTimedOut)
	ll.shake = clientShake{p: linkParams{hello: a.cfg.Hello, secret: a.secret.get(), rand: a.cfg.Rand, timeout: a.cfg.HandshakeTimeout}}
	if err := sendLine(ll.fd, []byte(opening)); err != nil {
		ll.openFailed(sendErr("opening", err))
		return
	}
	ll.step = linkShaking
}

// linkConnectFailed ends a link that could not connect to the relay.
func (ll *loopLink) linkConnectFailed(err error) {
	if errors.Is(err, unix.ECONNRESET) {
		err = &cutError{err} // accepted and reset at once: the relay is there
	}
	ll.openFailed(fmt.Errorf("connecting to %s: %w", ll.a.cfg.Relay, err))
}

// handshake feeds what has come on the link to its machine, until it would wait.
func (ll *loopLink) handshake() {
	for ll.step == linkShaking {
		want := ll.shake.room()
		buf := ll.lp.Scratch()[:want]
		n, err := sock.Recv(ll.fd, buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return // the rest comes with the next event, or the timer ends it
		case err != nil:
			ll.openFailed(ll.shake.cut(os.NewSyscallError("read", err)))
			return
		case n == 0:
			ll.openFailed(ll.shake.cut(io.EOF))
			return
		}
		send, done, rest, ferr := ll.shake.feed(buf[:n])
		if len(send) > 0 {
			if werr := sendLine(ll.fd, send); werr != nil && ferr == nil {
				ferr = sendErr("reply", werr)
			}
		}
		switch {
		case ferr != nil:
			ll.openFailed(ferr)
		case done:
			// A read that filled its buffer may have left bytes behind, which no new
			// edge announces.
			ll.linkUp(rest, n == want)
		}
	}
}

// handshakeTimedOut ends a handshake that its deadline overtook.
func (ll *loopLink) handshakeTimedOut() {
	ll.timer = nil
	ll.openFailed(ll.shake.cut(os.ErrDeadlineExceeded))
}

// linkUp makes the link idle on the loop once the verdict let it in; rest is what came
// after the verdict (a hello or the client's first bytes, if it was taken at once), more
// whether more may be waiting in the socket.
func (ll *loopLink) linkUp(rest []byte, more bool) {
	a := ll.a
	ll.stopTimer()
	ll.opened()
	ll.up = time.Now()
	if a.cfg.Log.Enabled(connlog.Info) {
		local, _ := sock.LocalAddr(ll.fd)
		ll.addr = fmt.Sprintf("%s -> %s", local, ll.relay)
	}
	a.stats.linksUp.Add(1)
	a.idle.add(1)
	a.cfg.Log.Printf("link #%d up %s", ll.linkID, ll.addr)
	ll.step = takeIdle
	ll.got = rest
	ll.shake = clientShake{}
	// What came with the verdict takes the link hot, however late the loop ran. The
	// readiness that brought the verdict is spent: a read that filled its buffer may have
	// left bytes behind, and one that did not may have left the relay's end (a FIN or a
	// reset that came right behind the verdict, as from a listentwo that stops or crashes
	// then), which a read shows only once the bytes before it are read. No new readiness
	// announces either, so the link looks once now (a peek); otherwise a link gone at its
	// verdict would be counted idle for ever, and its slot never open another.
	ll.hot = true
	switch {
	case len(ll.got) > 0:
		ll.taken()
	default:
		ll.hot = more
		ll.linkReady(0)
	}
	ll.hot = false
	if ll.step == takeIdle {
		ll.armTrim()
	}
}

// armTrim starts the idle link's idleTrim timer while more than Pool slots run (a burst
// opened links beyond Pool): a link that came up while no more ran is never one too many,
// as at most Pool such links exist.
func (ll *loopLink) armTrim() {
	a := ll.a
	if a.plainSlots.Load() > int64(a.cfg.Pool) {
		ll.timer = ll.lp.AfterFunc(a.cfg.idleTrim, ll.idleTimedOut)
	}
}

// idleTimedOut closes a link idle for idleTrim while more than Pool links are idle (its
// slot ends: see loopSlot.ended), as waitSession trims a TLS link; else it waits again.
func (ll *loopLink) idleTimedOut() {
	ll.timer = nil
	if ll.step != takeIdle {
		return
	}
	if !ll.a.idle.trim(ll.a.cfg.Pool) {
		ll.armTrim()
		return
	}
	ll.lp.CloseFD(ll.fd)
	ll.step = takeDone
	ll.stop()
	ll.ended(ll.end(errTrimmed))
}

// openFailed ends a link whose connect or handshake failed, and tells the slot why.
func (ll *loopLink) openFailed(err error) {
	ll.stopTimer()
	ll.conn.Stop()
	if ll.fd >= 0 {
		ll.lp.CloseFD(ll.fd)
		ll.fd = -1
	}
	ll.opened()
	ll.step = takeDone
	ll.stop()
	ll.ended(linkEnd{err: err})
}

// opened gives the slot's place among the links being opened back.
func (ll *loopLink) opened() {
	ll.a.stats.connecting.Add(-1)
	<-ll.a.opening
}

// loopSlot keeps one plain link open, on the loops: it opens a link on a loop with about
// the fewest pairs (relay.Loops.Near) and, when the link ends (failed to open, lost idle, or taken), the next
// one, after the backoff's delay when one is due. A client costs no goroutine: the link
// that it takes opens its replacement on its loop. Its methods run on its loop, l.
type loopSlot struct {
	a     *Agent
	ctx   context.Context
	book  *slotBook
	l     *relay.Loop
	timer *eventloop.Timer // the backoff's wait
}

// startLoopSlot starts a slot on the loop l (Run spreads the Pool slots over the loops in
// turn); it calls a.wg.Done when the slot ends, which a.plainSlots counts.
func (a *Agent) startLoopSlot(ctx context.Context, l *relay.Loop) {
	s := &loopSlot{a: a, ctx: ctx, book: a.newSlotBook(), l: l}
	s.l.Post(func() { s.next(true) })
}

// maxBurst is how many plain links beyond Pool connecttwo opens in a burst: a link taken
// as soon as it joined the relay's pool (hotTake), leaving no other link idle, means that
// clients wait on the relay for links to connect and handshake, so the take starts one
// more slot (grow); and a slot beyond Pool ends when its link
// fails, is lost, or stays idle for idleTrim while more than Pool are idle. 32 is
// maxOpening, and with the default --pool well below listentwo's default --max-links (64).
const maxBurst = 32

// grow starts one more plain slot beyond Pool, on the loop l (it must run there), unless
// maxBurst run already or a link beyond Pool failed to open less than idleTrim ago (a relay
// that refuses links gets no more attempts from a burst than one a idleTrim).
func (a *Agent) grow(ctx context.Context, l *relay.Loop) {
	if ctx.Err() != nil || time.Now().UnixNano() < a.growAfter.Load() {
		return
	}
	for {
		n := a.plainSlots.Load()
		if n >= int64(a.cfg.Pool+maxBurst) {
			return
		}
		if a.plainSlots.CompareAndSwap(n, n+1) {
			break
		}
	}
	a.wg.Add(1) // the taken link that grows the pool holds one: Run's wait has not ended
	s := &loopSlot{a: a, ctx: ctx, book: a.newSlotBook(), l: l}
	s.next(false)
}

// shrink ends a plain slot if more than Pool run, and reports whether it did.
func (a *Agent) shrink() bool {
	for {
		n := a.plainSlots.Load()
		if n <= int64(a.cfg.Pool) {
			return false
		}
		if a.plainSlots.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// next opens the slot's next link, on its loop unless another relays two pairs fewer
// (moved: the slot has just moved to s.l).
func (s *loopSlot) next(moved bool) {
	a := s.a
	if s.ctx.Err() != nil {
		a.wg.Done()
		return
	}
	if l := a.loops.Near(s.l); !moved && l != s.l {
		s.l = l
		l.Post(func() { s.next(true) })
		return
	}
	id := s.book.begin()
	select {
	case a.opening <- struct{}{}:
	default:
		// maxOpening links are being opened: wait for a place off the loop.
		go func() {
			select {
			case a.opening <- struct{}{}:
				s.l.Post(func() { s.resolve(id) })
			case <-s.ctx.Done():
				s.l.Post(func() {
					a.stats.connecting.Add(-1)
					s.ended(id, linkEnd{err: s.ctx.Err()})
				})
			}
		}()
		return
	}
	s.resolve(id)
}

// resolve finds the relay's and the service's addresses for link id, off the loop for a
// name, and opens the link.
func (s *loopSlot) resolve(id uint64) {
	a := s.a
	if isLiteral(a.cfg.Relay.Host) && isLiteral(a.cfg.Service.Host) {
		relayAddrs, err := a.relayAddrs(s.ctx)
		svcAddrs, svcErr := a.serviceAddrs(s.ctx)
		s.open(id, relayAddrs, err, svcAddrs, svcErr)
		return
	}
	go func() {
		relayAddrs, err := a.relayAddrs(s.ctx)
		var svcAddrs []netip.Addr
		var svcErr error
		if err == nil {
			svcAddrs, svcErr = a.serviceAddrs(s.ctx)
		}
		s.l.Post(func() { s.open(id, relayAddrs, err, svcAddrs, svcErr) })
	}()
}

func isLiteral(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// open opens link id on the loop, to one of relayAddrs; svcAddrs (or svcErr) are the
// service's, for when the link is taken.
func (s *loopSlot) open(id uint64, relayAddrs []netip.Addr, err error, svcAddrs []netip.Addr, svcErr error) {
	a := s.a
	if err != nil {
		a.stats.connecting.Add(-1)
		<-a.opening
		s.ended(id, linkEnd{err: err})
		return
	}
	ll := &loopLink{a: a, ctx: s.ctx, l: s.l, lp: s.l.Events(), linkID: id, fd: -1, srv: -1, relayAddrs: relayAddrs,
		addrs: svcAddrs, addrErr: svcErr, resolved: time.Now(), byName: !isLiteral(a.cfg.Service.Host),
		ended: func(end linkEnd) { s.ended(id, end) }}
	ll.open()
}

// ended goes on after link id ended: at once, after the backoff's delay, or not at all
// once ctx has ended, or when the link failed, was lost or was trimmed while more than
// Pool slots run (shrink): a slot beyond Pool opens no link to replace one that was not
// taken, and one whose link failed to open holds bursts off for idleTrim (growAfter).
func (s *loopSlot) ended(id uint64, end linkEnd) {
	a := s.a
	if end.err != nil && s.ctx.Err() == nil && a.shrink() {
		if !end.up {
			a.growAfter.Store(time.Now().Add(a.cfg.idleTrim).UnixNano())
		}
		a.notReplaced(id, end)
		a.wg.Done()
		return
	}
	wait, stop := s.book.ended(s.ctx, id, end)
	switch {
	case stop:
		s.a.wg.Done()
	case wait > 0:
		lp := s.l.Events()
		unwatch := context.AfterFunc(s.ctx, func() {
			lp.Post(func() {
				if s.timer != nil {
					s.timer.Stop()
					s.timer = nil
					s.a.wg.Done()
				}
			})
		})
		s.timer = lp.AfterFunc(wait, func() {
			s.timer = nil
			unwatch()
			s.next(false)
		})
	default:
		s.next(false)
	}
}
