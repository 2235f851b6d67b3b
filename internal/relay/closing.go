package relay

import "time"

// The close policy of a relay of two connections, the one both engines follow (Join on
// goroutines, Pair on an event loop): what each end of a direction does to the two sockets,
// and what happens to each socket at the close. It makes no system call; the engines do
// what it says.
//
// Sides and directions share their indexes: the client is side up (0), the source of the
// up direction; the server is side down (1).

// closing is the close policy's state for one relay. The zero value closes both sockets
// when either side ends; set halfClose to pass half-closes on.
type closing struct {
	halfClose bool

	end      string  // how the relay ended, once it has
	stopping bool    // the relay is over: what still runs is being stopped
	aborted  bool    // ... on an error, a reset or the relay's own decision: reset both at the close
	reset    bool    // a side was reset, and the other was reset in answer
	eof      [2]bool // the direction ended with its source's clean EOF
}

// closeStep is what the policy asks of the engine after an event, in this order.
type closeStep struct {
	shutdown int  // the side whose writing to shut down (pass the EOF on as a FIN), or -1
	resetNow int  // the side to reset now (SO_LINGER 0, then the close), or -1
	stop     bool // stop every direction still running, then settle and close (see settles)
}

var noStep = closeStep{shutdown: -1, resetNow: -1}

// finished is told that direction dir's source ended cleanly and everything it sent has
// been written. The EOF is passed on; without halfClose the relay is over.
func (c *closing) finished(dir int) closeStep {
	if c.stopping {
		return noStep // stopped by us: nothing more to decide
	}
	c.eof[dir] = true
	if c.end == "" {
		c.end = closedEnd(dir == up)
	}
	step := noStep
	step.shutdown = 1 - dir // the direction's destination
	if !c.halfClose || c.eof[1-dir] {
		c.stopping, step.stop = true, true
	}
	return step
}

// shutDown reports whether side's writing was shut down (the direction towards it ended
// and its FIN went out), so that the kernel may close its socket after a clean end.
func (c *closing) shutDown(side int) bool { return c.eof[1-side] }

// failed is told that a direction failed: resetBy is the side whose peer reset its
// connection (the engine asks the kernel), or -1, and end names any other failure
// ("error: ..."). A reset is passed on as a reset; any failure ends the relay, and both
// sides not reset already are reset at the close.
func (c *closing) failed(resetBy int, end string) closeStep {
	if c.stopping {
		return noStep
	}
	step := noStep
	switch resetBy {
	case up:
		c.end, c.reset, step.resetNow = EndClientReset, true, down
	case down:
		c.end, c.reset, step.resetNow = EndServerReset, true, up
	default:
		c.end = end
	}
	c.stopping, c.aborted, step.stop = true, true, true
	return step
}

// abort ends the relay on its own decision (the idle timeout, a stop): end says why, and
// both sides are reset at the close, since a FIN would make a cut transfer look complete.
func (c *closing) abort(end string) closeStep {
	if c.stopping {
		return noStep
	}
	c.end, c.stopping, c.aborted = end, true, true
	step := noStep
	step.stop = true
	return step
}

// settles reports whether side is settled before the close: its input is discarded and
// the close waits until its peer has acknowledged everything written to it, since closing
// a socket with unread input makes Linux reset it and drop what it still queues. A side
// whose source ended needs none; an aborted relay resets instead.
func (c *closing) settles(side int) bool {
	return !c.reset && !c.aborted && !c.eof[side]
}

// resetsAtClose reports whether side is reset (SO_LINGER 0) when it is closed.
func (c *closing) resetsAtClose(int) bool { return c.aborted && !c.reset }

func closedEnd(isUp bool) string {
	if isUp {
		return EndClientClosed
	}
	return EndServerClosed
}

const (
	// settleFirst and settleMax are the first and the longest pause between two looks at
	// whether a peer acknowledged everything before the close.
	settleFirst = 100 * time.Microsecond
	settleMax   = 50 * time.Millisecond
)

// settleClock paces the looks at a peer's acknowledgements before a close: a pause of
// settleFirst, each next one twice the last up to settleMax, and it gives up once the count
// of unacknowledged bytes has not gone down for stall.
type settleClock struct {
	stall, wait time.Duration
	last        int // the lowest count seen, -1 before the first look
	deadline    time.Time
}

func newSettleClock(now time.Time, stall, first time.Duration) settleClock {
	return settleClock{stall: stall, wait: first, last: -1, deadline: now.Add(stall)}
}

// next is told the count of unacknowledged bytes at now, and returns how long to pause
// before the next look, or false to give up waiting.
func (s *settleClock) next(now time.Time, unacked int) (time.Duration, bool) {
	if s.last < 0 || unacked < s.last {
		s.last, s.deadline = unacked, now.Add(s.stall)
	} else if now.After(s.deadline) {
		return 0, false
	}
	d := s.wait
	s.wait = min(2*s.wait, settleMax)
	return d, true
}
