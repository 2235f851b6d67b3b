package ratelimit

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// Bucket is the one rate limit of a copy's direction, for every engine: tcppipe's
// relay.Copy waits on it (Wait), tcp-pf's event loops ask it (Reserve) and arm a timer.
// It is a token bucket (x/time/rate) for a rate in bytes per second, paid a step at a
// time: a step moves at most one Burst, and what a short step leaves is carried over as
// credit to the next, so no token is wasted. Once the first bytes have moved, the bucket
// widens from Burst to Slack, so time that a busy machine held the copy up is
// made up while the steps stay one Burst.
//
// A nil *Bucket is unlimited: Wait and Reserve give the caller's most at once, Used does
// nothing. A Bucket is for one direction: its methods must not be called simultaneously.
type Bucket struct {
	lim     *rate.Limiter
	rate    int64
	step    int  // the most one step moves: Burst, also once widened
	credit  int  // tokens paid for and not yet used
	moved   bool // bytes have moved: the next Reserve widens the bucket
	widened bool
}

// NewBucket returns the Bucket for bytesPerSecond, or nil when it is zero (unlimited).
func NewBucket(bytesPerSecond int64) *Bucket {
	lim := New(bytesPerSecond)
	if lim == nil {
		return nil
	}
	return &Bucket{lim: lim, rate: bytesPerSecond, step: lim.Burst()}
}

// Reserve returns how many bytes, at most most, the next step may move at now; or, when
// the bucket must refill first, 0 and how long to wait, after which a call returns the
// bytes reserved now.
func (b *Bucket) Reserve(now time.Time, most int) (int, time.Duration) {
	if b == nil {
		return most, 0
	}
	if b.moved && !b.widened {
		b.lim.SetBurstAt(now, Slack(b.rate)) // keeping its tokens, on the caller's clock
		b.widened = true
	}
	want := min(most, b.step)
	if b.credit < want {
		r := b.lim.ReserveN(now, want-b.credit)
		b.credit = want
		if delay := r.DelayFrom(now); delay > 0 {
			return 0, delay
		}
	}
	return min(b.credit, want), 0
}

// Wait is Reserve for a goroutine: it waits until the step is paid for and returns how
// many bytes, at most most, the step may move; it returns ctx's error if ctx ends while it
// waits.
func (b *Bucket) Wait(ctx context.Context, most int) (int, error) {
	for {
		n, delay := b.Reserve(time.Now(), most)
		if delay <= 0 {
			return n, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
	}
}

// Used records that n of the bytes Reserve or Wait gave were moved. Once bytes have
// moved, the next step widens the bucket.
func (b *Bucket) Used(n int) {
	if b == nil || n <= 0 {
		return
	}
	b.credit -= n
	b.moved = true
}
