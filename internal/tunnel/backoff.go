package tunnel

import (
	"context"
	"math/rand/v2"
	"time"
)

// Default reconnect delays of connecttwo: the first retry after DefaultBackoffBase, doubling
// on each failure up to DefaultBackoffMax.
const (
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
	// DefaultRefusedMax caps the delay after a link cut or refused during its handshake.
	DefaultRefusedMax = time.Second
)

// Backoff computes reconnect delays: Base after the first failure, doubling after each
// further one, never above Max, each delay drawn uniformly from its upper half ([d/2, d]) so
// that many agents restarted together do not retry in step. The zero value uses the
// defaults above. A Backoff is not safe for simultaneous use.
type Backoff struct {
	Base, Max time.Duration
	// Rand returns a number in [0, 1) for the jitter; nil uses math/rand/v2.
	Rand func() float64
	n    int
}

func (b *Backoff) base() time.Duration {
	if b.Base > 0 {
		return b.Base
	}
	return DefaultBackoffBase
}

func (b *Backoff) max() time.Duration {
	if b.Max > 0 {
		return b.Max
	}
	return DefaultBackoffMax
}

// Next returns the delay before the next attempt and counts one more failure.
func (b *Backoff) Next() time.Duration {
	d := b.base()
	for i := 0; i < b.n && d < b.max(); i++ {
		d *= 2
	}
	d = min(d, b.max())
	b.n++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}

// Failures returns how many delays Next has handed out since the last Reset.
func (b *Backoff) Failures() int { return b.n }

// Reset forgets past failures: the next delay is Base again.
func (b *Backoff) Reset() { b.n = 0 }

// sleep waits d or until ctx ends, and reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
