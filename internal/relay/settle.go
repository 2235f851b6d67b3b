package relay

import (
	"context"
	"net"
	"time"
)

// SettleTimeout is how long Settle waits, at most, for the peer's acknowledgements to
// move on: a peer that acknowledges nothing more for this long is taken as gone.
const SettleTimeout = 10 * time.Second

// Settle is the acknowledged close: it waits until the peer of c has acknowledged every
// byte and the FIN written to c, discarding what the peer sends meanwhile (without
// copying), so that c can then be closed without Linux resetting it and dropping the tail
// it still queues. It gives up when the count of unacknowledged bytes has not gone down
// for stall, when the peer resets, or when ctx ends, and returns that count: 0 when the
// peer has everything, -1 when the kernel cannot tell. Call it after CloseWrite.
func Settle(ctx context.Context, c *net.TCPConn, stall time.Duration) int {
	// Nothing unread right now is not enough to close at once: the peer may send more in
	// the next microsecond, and a close then resets. Only an acknowledged tail is safe.
	clock := newSettleClock(time.Now(), stall, settleFirst)
	for {
		discard(c)
		// The state first, then the count: a clean end where our FIN is the last to be
		// acknowledged (the peer closed first) moves the socket to TCP_CLOSE too, the
		// moment that acknowledgement comes, and then the count is 0. Read the other way
		// round, a count of 1 (the FIN) taken just before it came would look like a reset.
		reset := isReset(c)
		n := unacked(c)
		if n <= 0 || ctx.Err() != nil || reset {
			return n
		}
		wait, ok := clock.next(time.Now(), n)
		if !ok {
			return n
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			discard(c)
			return unacked(c)
		}
	}
}

// discard drops, without blocking and without copying, what the peer of c has already
// sent, and returns how many bytes that was.
func discard(c *net.TCPConn) int {
	total := 0
	control(c, func(fd int) { total = discardFD(fd) })
	return total
}

// control runs f with c's descriptor, if it has one.
func control(c *net.TCPConn, f func(fd int)) {
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) { f(int(fd)) })
	}
}

// AwaitInFlight waits, for at most limit, until nothing sent on c is in flight any more:
// every segment sent has been acknowledged, or is not going to be before a retransmission.
// Then ConnUnacked counts exactly the bytes the peer does not have. Call it, with nothing
// more being written, before resetting a connection whose count matters: bytes that the
// peer's kernel had but whose acknowledgement had not come back yet would be missed.
func AwaitInFlight(c *net.TCPConn, limit time.Duration) {
	deadline := time.Now().Add(limit)
	wait := 50 * time.Microsecond
	last := -1
	for {
		n := inFlight(c)
		if n <= 0 || isReset(c) || time.Now().After(deadline) {
			return
		}
		if n == last && wait >= 10*time.Millisecond {
			return // unchanged for a while: lost or held back, not on its way
		}
		last = n
		time.Sleep(wait) // a bounded poll of the kernel's counters, not a synchronisation
		wait = min(2*wait, 10*time.Millisecond)
	}
}
