package relay

import (
	"context"
	"errors"
	"net"
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
	// Progress, when set, is told of bytes as they move (up: client to server), at least
	// once a second while a direction flows. It must be safe for simultaneous use.
	Progress func(up bool, n int64)
}

// Ends that Join reports in Result.End.
const (
	EndClientClosed = "client closed"
	EndServerClosed = "server closed"
	EndClientReset  = "reset by client"
	EndServerReset  = "reset by server"
	EndIdle         = "idle timeout"
	EndStopped      = "stopped"
)

// Result is what Join returns: the bytes each way and how the relay ended.
type Result struct {
	Up       int64         // bytes from client to server
	Down     int64         // bytes from server to client
	Duration time.Duration // from the start of Join to its end
	End      string        // one of the End constants, or "error: ..." for another failure
	Err      error         // the first error other than a clean end, if any
}

type direction struct {
	up  bool
	n   int64
	err error
}

// Join relays client <-> server until both directions are done, then closes both
// connections. The two *net.TCPConn values are used raw so that splice applies. When one
// side resets, the other is closed with a reset too (SO_LINGER 0), so a backend never
// mistakes an aborted upload for a complete one. Cancelling ctx stops the relay.
func Join(ctx context.Context, client, server *net.TCPConn, o Options) Result {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var lastActive atomic.Int64
	lastActive.Store(start.UnixNano())
	tick := time.Duration(0)
	if o.Progress != nil || o.IdleTimeout > 0 {
		tick = time.Second
		if o.IdleTimeout > 0 && o.IdleTimeout/2 < tick {
			tick = max(o.IdleTimeout/2, 10*time.Millisecond)
		}
	}
	upCtx, stopUp := context.WithCancel(ctx)
	downCtx, stopDown := context.WithCancel(ctx)
	defer stopUp()
	defer stopDown()

	done := make(chan direction, 2)
	run := func(dctx context.Context, up bool, dst, src *net.TCPConn) {
		opts := CopyOptions{Limiter: ratelimit.New(o.Rate), Tick: tick}
		if tick > 0 {
			opts.Progress = func(n int64) {
				lastActive.Store(time.Now().UnixNano())
				if o.Progress != nil {
					o.Progress(up, n)
				}
			}
		}
		n, err := Copy(dctx, dst, src, opts)
		done <- direction{up: up, n: n, err: err}
	}
	go run(upCtx, true, server, client)
	go run(downCtx, false, client, server)

	var idle <-chan time.Time
	if o.IdleTimeout > 0 {
		t := time.NewTicker(tick)
		defer t.Stop()
		idle = t.C
	}

	res := Result{}
	past := time.Unix(1, 0)
	// stop ends one direction: a deadline in the past wakes it whether it waits in splice
	// for its source or its destination, and the cancelled context ends a rate wait.
	stop := func(up bool) {
		if up {
			stopUp()
			_ = client.SetReadDeadline(past)
			_ = server.SetWriteDeadline(past)
		} else {
			stopDown()
			_ = server.SetReadDeadline(past)
			_ = client.SetWriteDeadline(past)
		}
	}
	ending := false // set once Join itself stops what still runs
	abort := func(end string, err error) {
		res.End, res.Err, ending = end, err, true
		stop(true)
		stop(false)
	}
	ctxDone := ctx.Done()
	for pending := 2; pending > 0; {
		select {
		case d := <-done:
			pending--
			if d.up {
				res.Up = d.n
			} else {
				res.Down = d.n
			}
			if ending {
				continue // stopped by us: just collect
			}
			if d.err != nil {
				end, peer := classify(client, server, d)
				if peer != nil {
					_ = peer.SetLinger(0)
				}
				abort(end, d.err)
				continue
			}
			if res.End == "" {
				res.End = closedEnd(d.up)
			}
			// A clean EOF: everything the source sent has been written; pass the end on as
			// a FIN so the destination reads all of it before any close.
			if d.up {
				_ = server.CloseWrite()
			} else {
				_ = client.CloseWrite()
			}
			if !o.HalfClose {
				ending = true
				stop(!d.up)
			}
		case <-idle:
			if time.Since(time.Unix(0, lastActive.Load())) >= o.IdleTimeout {
				abort(EndIdle, nil)
				idle = nil
			}
		case <-ctxDone:
			abort(EndStopped, nil)
			ctxDone = nil
		}
	}
	if res.End != EndClientReset && res.End != EndServerReset {
		// Unread bytes at close make the kernel send a reset and drop what is still
		// queued for that peer; discard them so the close is a plain FIN.
		drain(client)
		drain(server)
	}
	_ = client.Close()
	_ = server.Close()
	res.Duration = time.Since(start)
	return res
}

func closedEnd(up bool) string {
	if up {
		return EndClientClosed
	}
	return EndServerClosed
}

// classify names how a direction failed. A socket the peer reset is in state CLOSE; the
// other connection is then returned so the caller resets it too.
func classify(client, server *net.TCPConn, d direction) (string, *net.TCPConn) {
	switch {
	case isReset(client):
		return EndClientReset, server
	case isReset(server):
		return EndServerReset, client
	case errors.Is(d.err, context.Canceled):
		return EndStopped, nil
	}
	return "error: " + d.err.Error(), nil
}

// drain reads and discards whatever the peer has already sent, without blocking.
func drain(c *net.TCPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var buf [16 << 10]byte
	_ = raw.Control(func(fd uintptr) {
		for i := 0; i < 64; i++ {
			n, err := recvNonBlock(int(fd), buf[:])
			if n <= 0 || err != nil {
				return
			}
		}
	})
}
