package endpoint

import (
	"errors"
	"fmt"
)

// ErrNoHost is the end of a failover plan that had no candidate to try.
var ErrNoHost = errors.New("no host to connect to")

// Source gives a Plan its candidates one at a time: the best one not among tried (those
// taken so far, in order), or false when none is left.
type Source[H any] interface {
	Next(tried []H) (H, bool)
}

// List is a Source of candidates in a fixed order.
type List[H any] []H

// Next returns the first candidate of l not tried yet.
func (l List[H]) Next(tried []H) (H, bool) {
	if len(tried) < len(l) {
		return l[len(tried)], true
	}
	var none H
	return none, false
}

// Plan is the one failover policy of a connection, driven alike by a blocking caller
// (Dialer.DialFirst, tcppipe) and by tcp-pf's event loops: candidates are taken in the
// source's order one at a time, each is tried (all of its addresses, where the driver
// dials addresses itself) until one connects, and a failure moves on to the next one.
// The zero value is ready to use; a Plan is not safe for simultaneous use.
type Plan[H any] struct {
	tried    []H
	failures int
	last     error // the current candidate's last failure, nil once a new one is taken
	lastAny  error // the last failure of any candidate
	ended    bool  // the source had no candidate left
}

// Next takes the next candidate from src and reports false when none is left.
func (p *Plan[H]) Next(src Source[H]) (H, bool) {
	h, ok := src.Next(p.tried)
	if ok {
		p.tried = append(p.tried, h)
		p.last = nil
	}
	p.ended = !ok
	return h, ok
}

// Ended reports whether the source had no candidate left when last asked.
func (p *Plan[H]) Ended() bool { return p.ended }

// Trying reports whether a candidate has been taken; Current returns it.
func (p *Plan[H]) Trying() bool { return len(p.tried) > 0 }

// Current returns the candidate being tried, the last one taken (the zero H before the
// first).
func (p *Plan[H]) Current() H {
	if len(p.tried) == 0 {
		var none H
		return none
	}
	return p.tried[len(p.tried)-1]
}

// Tried returns the candidates taken so far, in order (for a Source that must skip them).
func (p *Plan[H]) Tried() []H { return p.tried }

// Failed records a failed attempt on the current candidate (an address of it, or all).
func (p *Plan[H]) Failed(err error) {
	p.failures++
	p.last, p.lastAny = err, err
}

// LastErr returns the current candidate's last failure, nil when it has none yet.
func (p *Plan[H]) LastErr() error { return p.last }

// Failures returns how many attempts failed.
func (p *Plan[H]) Failures() int { return p.failures }

// Err is why the plan ended without a connection: ErrNoHost when nothing was tried, the
// one failure, or how many failed and the last one.
func (p *Plan[H]) Err() error {
	switch p.failures {
	case 0:
		return ErrNoHost
	case 1:
		return p.lastAny
	}
	return fmt.Errorf("all %d hosts failed, last: %w", p.failures, p.lastAny)
}
