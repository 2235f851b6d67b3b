package ratelimit

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// sent is n bytes moved at a moment.
type sent struct {
	at time.Time
	n  int
}

// maxWindow returns the most bytes any window of w carries, a window starting at a step.
func maxWindow(steps []sent, w time.Duration) int {
	most, sum, j := 0, 0, 0
	for i := range steps {
		for ; j < len(steps) && steps[j].at.Sub(steps[i].at) < w; j++ {
			sum += steps[j].n
		}
		most = max(most, sum)
		sum -= steps[i].n
	}
	return most
}

// copier is how a copy uses its Bucket, for TestBucketBounds.
type copier struct {
	name   string
	most   func(i int) int               // the caller's own cap on step i
	moved  func(r *rand.Rand, n int) int // how many of the n allowed bytes a step moves
	holdUp bool                          // 25 ms lost every 300 ms (a busy machine)
}

// runFor is long enough that one step of the smallest rate (a second's worth) is within
// 3% of the run.
const runFor = 40 * time.Second

// simulate runs c on b for runFor on the test's clock and returns its steps. A step
// larger than the caller's cap or one burst fails the test.
func simulate(t *testing.T, b *Bucket, rate int64, c copier) []sent {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(rate), 7))
	start := time.Unix(1000, 0)
	now, nextHold := start, start.Add(300*time.Millisecond)
	var steps []sent
	for i := 0; now.Sub(start) < runFor; {
		n, delay := b.Reserve(now, c.most(i))
		if delay > 0 {
			now = now.Add(delay)
			continue
		}
		if n <= 0 || n > c.most(i) || n > Burst(rate) {
			t.Fatalf("rate %d, %s: Reserve gave %d bytes for a step of at most %d (burst %d)", rate, c.name, n, c.most(i), Burst(rate))
		}
		m := c.moved(r, n)
		steps = append(steps, sent{now, m})
		b.Used(m)
		if c.holdUp && !now.Before(nextHold) {
			now, nextHold = now.Add(25*time.Millisecond), nextHold.Add(300*time.Millisecond)
		}
		now = now.Add(time.Microsecond) // the system call
		i++
	}
	return steps
}

// average returns the bytes per second of steps, the bucket's initial fill left out.
func average(steps []sent, rate int64) float64 {
	total := 0
	for _, s := range steps {
		total += s.n
	}
	return float64(total-Burst(rate)) / steps[len(steps)-1].at.Sub(steps[0].at).Seconds()
}

// The Bucket keeps the spec's bounds for every rate, whether the copy is greedy, its steps
// come up short (a splice that moves less than it may), it is held up now and then, or
// --insert's steps of their own size come first: the average is within 3% of the rate, no
// 1-second window carries more than 1.05 x rate + 64 KiB, and, with no hold-ups, no 100 ms
// window more than 1.2 x its share plus one step. The clock is the test's; Wait runs the
// same Reserve on the real one. The control: a bucket that never widens loses the
// hold-ups' time.
func TestBucketBounds(t *testing.T) {
	rates := []int64{1000, 4 << 10, 64 << 10, 1 << 20, 100 << 20, 1 << 30}
	const spliceMost = 1 << 20
	all := func(_ *rand.Rand, n int) int { return n }
	copiers := []copier{
		{"greedy", func(int) int { return spliceMost }, all, false},
		{"short steps", func(int) int { return spliceMost }, func(r *rand.Rand, n int) int { return 1 + r.IntN(n) }, false},
		{"held up", func(int) int { return spliceMost }, all, true},
		{"insert first", func(i int) int {
			if i < 20 {
				return 1 << 10 // --insert's steps
			}
			return spliceMost
		}, all, false},
	}
	for _, rate := range rates {
		for _, c := range copiers {
			steps := simulate(t, NewBucket(rate), rate, c)
			avg := average(steps, rate)
			if d := avg/float64(rate) - 1; d > 0.03 || d < -0.03 {
				t.Errorf("rate %d, %s: average %.0f B/s, %+.2f%% off", rate, c.name, avg, 100*d)
			}
			bound := 1.05*float64(rate) + 64<<10
			if most := maxWindow(steps, time.Second); float64(most) > bound {
				t.Errorf("rate %d, %s: a 1 s window carried %d bytes, bound %.0f", rate, c.name, most, bound)
			}
			if !c.holdUp {
				share := 1.2*float64(rate)/10 + float64(Burst(rate))
				if most := maxWindow(steps, 100*time.Millisecond); float64(most) > share {
					t.Errorf("rate %d, %s: a 100 ms window carried %d bytes, bound %.0f", rate, c.name, most, share)
				}
			}
		}
		unwidened := NewBucket(rate)
		unwidened.widened = true // as the loop's Pacer was: the bucket stays one burst
		if avg := average(simulate(t, unwidened, rate, copiers[2]), rate); rate >= 1<<20 && avg > 0.98*float64(rate) {
			t.Errorf("rate %d: an unwidened bucket held up kept %.0f B/s; the control should lose the hold-ups", rate, avg)
		}
	}
}

// Wait is Reserve on the real clock: the first step is the full bucket at once, the next
// one waits for the refill, and a cancelled context ends a wait with its error.
func TestBucketWait(t *testing.T) {
	const rate = 64 << 10
	b := NewBucket(rate)
	ctx := context.Background()
	n, err := b.Wait(ctx, 1<<20)
	if err != nil || n != Burst(rate) {
		t.Fatalf("first Wait = %d, %v; want the burst %d at once", n, err, Burst(rate))
	}
	b.Used(n)
	start := time.Now()
	if n, err = b.Wait(ctx, 1<<20); err != nil || n != Burst(rate) {
		t.Fatalf("second Wait = %d, %v", n, err)
	}
	// A burst of 4 KiB at 64 KiB/s refills in 62.5 ms; the bucket was just emptied.
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("the second step came after %v; the refill takes 62.5 ms", took)
	}
	b.Used(n)
	if _, _ = b.Reserve(time.Now(), 1); b.lim.Burst() != Slack(rate) {
		t.Errorf("after two steps the bucket holds %d; want it widened to %d", b.lim.Burst(), Slack(rate))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Wait(cctx, 1<<20); err == nil {
		t.Error("Wait on an empty bucket with a cancelled context returned no error")
	}
	var none *Bucket
	if n, err := none.Wait(ctx, 123); n != 123 || err != nil {
		t.Errorf("nil Bucket: Wait = %d, %v; want 123 at once", n, err)
	}
	none.Used(5) // does nothing
}
