package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"shd-tcp-tools/internal/ratelimit"
)

// Options choose how Join relays and ends a pair of connections. The zero value closes
// both connections when either side ends, with no rate limit and no idle timeout.
type Options struct {
	// HalfClose passes an EOF from one side on as a half-close (FIN) to the other and keeps
	// the other direction flowing until it ends too (tcp-pf --lazy, the tunnel pair).
	// Without it, the first side to end closes both, after what was read from it is written.
	HalfClose bool
	// Rate caps each direction at this many bytes per second; zero means unlimited.
	Rate int64
	// IdleTimeout closes both connections when neither direction has moved a byte for
	// this long; zero means never.
	IdleTimeout time.Duration
	// Progress, when set, is told of bytes as they are written (up: client to server).
	// It must be safe for simultaneous use and cheap (an atomic add).
	Progress func(up bool, n int64)
	// Trim, when set, hears of the relay's start and end, and gives the memory that the
	// process's user-space relays used back once none has run for a while.
	Trim *Trimmer

	// stall replaces SettleTimeout (a test seam).
	stall time.Duration
}

// Ends that Join reports in Result.End.
const (
	EndClientClosed = "client closed"
	EndServerClosed = "server closed"
	EndClientReset  = "reset by client"
	EndServerReset  = "reset by server"
	// The ends a relay decides on its own are "cut": both connections are reset, so that
	// neither peer takes the end for a complete transfer.
	EndIdle    = "cut: idle timeout"
	EndStopped = "cut: stopped"
)

// Result is what Join returns: the bytes each way and how the relay ended.
type Result struct {
	Up       int64         // bytes from client to server
	Down     int64         // bytes from server to client
	Duration time.Duration // from the start of Join to its end
	End      string        // one of the End constants, or "error: ..." for another failure
	Err      error         // the first error other than a clean end, if any
	// Spliced is how many of the bytes a Pair took from either side moved by splice, never
	// entering user space (Join leaves it 0).
	Spliced int64
}

// Join relays client <-> server until both directions are done, then closes both
// connections. Each side is a *net.TCPConn, used raw so that splice applies, or a
// connection layered on one (a *tls.Conn: a Layered whose NetConn is a *net.TCPConn),
// copied through a buffer in user space. On a layered side a clean end is passed on as the
// layer's own end (TLS close_notify) and then a FIN, and the resets, linger and settling
// below act on the TCP connection under it (a reset sends no close_notify first, so a cut
// never looks complete). When one
// side resets, the other is closed with a reset too (SO_LINGER 0), so a backend never
// mistakes an aborted upload for a complete one; so are both when Join ends the relay
// itself (an error, the idle timeout, or ctx cancelled: End is then EndIdle or
// EndStopped). Cancelling ctx stops the relay. A side may also be a Session (one session
// of a link that carries many): the same policy applies, its half-close and reset being
// the Session's own messages, and at the close Join calls its End rather than closing it.
//
// Join runs the client-to-server direction on the calling goroutine and one more
// goroutine for the other; ends are handled as they happen, without a third goroutine, to
// keep an idle relay small.
func Join(ctx context.Context, client, server net.Conn, o Options) Result {
	o.Trim.begin()
	defer o.Trim.end()
	j := &joiner{client: sideOf(client), server: sideOf(server), start: time.Now(), policy: closing{halfClose: o.HalfClose}}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.cancel = cancel
	stopOnCancel := context.AfterFunc(ctx, func() { j.abort(EndStopped) })
	defer stopOnCancel()

	var idle *time.Timer
	if o.IdleTimeout > 0 {
		j.lastActive.Store(j.start.UnixNano())
		check := func() {
			quiet := time.Since(time.Unix(0, j.lastActive.Load()))
			if quiet >= o.IdleTimeout {
				j.abort(EndIdle)
				return
			}
			j.mu.Lock()
			if !j.policy.stopping {
				idle.Reset(o.IdleTimeout - quiet)
			}
			j.mu.Unlock()
		}
		j.mu.Lock()
		idle = time.AfterFunc(o.IdleTimeout, check)
		j.mu.Unlock()
		defer idle.Stop()
	}
	options := func(up bool) CopyOptions {
		co := CopyOptions{Bucket: ratelimit.NewBucket(o.Rate), Tick: time.Second}
		if o.Progress != nil || o.IdleTimeout > 0 {
			co.Progress = func(n int64) {
				if o.IdleTimeout > 0 {
					j.lastActive.Store(time.Now().UnixNano())
				}
				if o.Progress != nil {
					o.Progress(up, n)
				}
			}
		}
		return co
	}

	downDone := make(chan struct{})
	go func() {
		defer close(downDone)
		n, err := Copy(jctx, j.client.c, j.server.c, options(false))
		j.finished(false, n, err)
	}()
	n, err := Copy(jctx, j.server.c, j.client.c, options(true))
	j.finished(true, n, err)
	<-downDone

	j.mu.Lock()
	defer j.mu.Unlock()
	// The close policy says which side to settle (wait for its peer's acknowledgement,
	// its input discarded meanwhile) and which to reset. A Session is not closed: End
	// finishes it on its link (a reset sent if no end was, the peer's end awaited).
	for i, sd := range [2]side{j.client, j.server} {
		switch {
		case sd.sess != nil:
			sd.sess.End(ctx)
		case j.policy.resetsAtClose(i):
			_ = sd.tcp.SetLinger(0)
		case j.policy.settles(i):
			Settle(ctx, sd.tcp, cmp.Or(o.stall, SettleTimeout))
		}
	}
	// The TCP connections, not a layer over them: a layer's Close would send its own end
	// (close_notify) after a reset was decided.
	for _, sd := range [2]side{j.client, j.server} {
		if sd.sess == nil {
			_ = sd.tcp.Close()
		}
	}
	j.res.Duration = time.Since(j.start)
	j.res.End = j.policy.end
	return j.res
}

const (
	up   = 0
	down = 1
)

// Layered is a connection over another, such as a *tls.Conn: Join relays it through a
// buffer and acts on the *net.TCPConn that NetConn returns for resets and settling.
type Layered interface {
	net.Conn
	NetConn() net.Conn
	// CloseWrite ends the layer's stream (TLS close_notify), not the connection under it.
	CloseWrite() error
}

// Session is one session of a link that carries sessions one after another and passes
// each direction's end on as a message of its own (the tunnel's TLS links, whose frames
// say FIN and RST): Read returns the session's bytes, then io.EOF once the peer ended its
// direction, or an error matching ErrSessionReset once the peer was reset; Write sends
// bytes; CloseWrite ends this direction (the peer half-closes); Reset tells the peer that
// this side was reset or cut (the peer resets). A read deadline in the past stops a Read
// and leaves the session intact; a write deadline in the past stops the writes. Join
// relays a Session like a Layered side with the same close policy, but never closes it:
// at the close it calls End, which finishes the session on its link (a reset sent when no
// end was, the peer's end awaited) and keeps the link for the next session or closes it.
type Session interface {
	net.Conn
	CloseWrite() error
	Reset() error
	End(ctx context.Context)
}

// ErrSessionReset is what a Session's Read returns once its peer said it was reset.
var ErrSessionReset = errors.New("reset by the other end of the link")

// side is one connection of a Join: what is copied (c) and the TCP connection under it,
// the same one when there is no layer; or a Session, which has no TCP connection of its
// own to reset or settle.
type side struct {
	c    net.Conn
	tcp  *net.TCPConn
	sess Session
}

// sideOf finds the TCP connection under c. Join's callers pass only *net.TCPConn values
// and Layered ones over them, so anything else is a programming error.
func sideOf(c net.Conn) side {
	switch t := c.(type) {
	case *net.TCPConn:
		return side{c: t, tcp: t}
	case Session:
		return side{c: t, sess: t}
	case Layered:
		if _, tcp := under(t); tcp != nil {
			return side{c: t, tcp: tcp}
		}
	}
	panic(fmt.Sprintf("relay.Join: %T is neither a *net.TCPConn, nor layered on one, nor a Session", c))
}

// under follows NetConn down from l to the TCP connection, through any layers between
// (a Wire, or a type that embeds one, such as a reader over it), and returns it with the
// Wire on the way, if any (nil, nil when the bottom is not TCP).
func under(l Layered) (*Wire, *net.TCPConn) {
	c := l.NetConn()
	for range 8 {
		switch u := c.(type) {
		case *net.TCPConn:
			return nil, u
		case interface{ theWire() *Wire }:
			w := u.theWire()
			return w, w.tcp
		case interface{ NetConn() net.Conn }:
			c = u.NetConn()
		default:
			return nil, nil
		}
	}
	return nil, nil
}

// closeWrite passes a clean end on: the layer's end first, when there is a layer, then
// the FIN.
func (s side) closeWrite() {
	if s.sess != nil {
		_ = s.sess.CloseWrite()
		return
	}
	if l, ok := s.c.(Layered); ok {
		_ = l.CloseWrite()
	}
	_ = s.tcp.CloseWrite()
}

// reset passes a reset on: SO_LINGER 0 on a TCP connection (the close sends the reset),
// the Session's own reset on a Session.
func (s side) reset() {
	if s.sess != nil {
		_ = s.sess.Reset()
		return
	}
	_ = s.tcp.SetLinger(0)
}

// wasReset reports whether the kernel says the peer of s's TCP connection reset it.
func (s side) wasReset() bool { return s.sess == nil && isReset(s.tcp) }

// joiner is the state of one Join, shared by its two directions and its timers.
type joiner struct {
	client, server side
	start          time.Time
	cancel         context.CancelFunc
	lastActive     atomic.Int64

	mu     sync.Mutex
	res    Result
	policy closing
}

// finished records the end of one direction and does what the close policy says.
func (j *joiner) finished(isUp bool, n int64, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	dir := down
	if isUp {
		dir = up
		j.res.Up = n
	} else {
		j.res.Down = n
	}
	if err == nil {
		// Linux reports a peer's reset once: when the other direction's write took it, a
		// read from the same socket then returns a plain EOF. A socket that the kernel has
		// closed while this relay never sent it a FIN (the other direction still runs) was
		// reset, not half-closed, and its EOF must not be passed on as a clean end.
		if src := [2]side{j.client, j.server}[dir]; !j.policy.shutDown(dir) && src.wasReset() {
			j.do(j.policy.failed(dir, ""))
			return
		}
		j.do(j.policy.finished(dir))
		return
	}
	if j.policy.stopping {
		return // stopped by us: just collect
	}
	resetBy, end := -1, "error: "+err.Error()
	switch {
	case errors.Is(err, ErrSessionReset): // read from the direction's source
		resetBy = dir
	case j.client.wasReset():
		resetBy = up
	case j.server.wasReset():
		resetBy = down
	case errors.Is(err, context.Canceled):
		end = EndStopped
	}
	j.res.Err = err
	j.do(j.policy.failed(resetBy, end))
}

// abort ends the relay on Join's own decision, unless it is ending already.
func (j *joiner) abort(end string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.do(j.policy.abort(end))
}

// do carries out the close policy's step; j.mu is held.
func (j *joiner) do(step closeStep) {
	sides := [2]side{j.client, j.server}
	if step.shutdown >= 0 {
		// Everything the source sent has been written: the end follows it.
		sides[step.shutdown].closeWrite()
	}
	if step.resetNow >= 0 {
		sides[step.resetNow].reset()
	}
	if step.stop {
		j.stopDirection(true)
		j.stopDirection(false)
	}
}

// stopDirection ends one direction: deadlines in the past wake it whether it waits for
// its source or its destination, and the cancelled context ends a rate wait.
func (j *joiner) stopDirection(isUp bool) {
	j.cancel()
	past := time.Unix(1, 0)
	src, dst := j.server, j.client
	if isUp {
		src, dst = j.client, j.server
	}
	_ = src.c.SetReadDeadline(past)
	_ = dst.c.SetWriteDeadline(past)
}
