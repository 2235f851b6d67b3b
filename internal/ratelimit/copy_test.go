package ratelimit_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"shd-tcp-tools/internal/ratelimit"
	"shd-tcp-tools/internal/relay"
)

// zeros is an endless source that costs nothing per byte.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { return len(p), nil }

// sample is the cumulative byte count a recorder had seen at a moment.
type sample struct {
	at    time.Duration // since the copy started
	total int64
}

// recorder is a destination that notes, after every write, the (fake) time and the bytes
// received so far.
type recorder struct {
	start   time.Time
	mu      sync.Mutex
	total   int64
	samples []sample
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total += int64(len(p))
	r.samples = append(r.samples, sample{time.Since(r.start), r.total})
	return len(p), nil
}

func (r *recorder) snapshot() []sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sample(nil), r.samples...)
}

// at returns the bytes received up to and including d.
func at(ss []sample, d time.Duration) int64 {
	var n int64
	for _, s := range ss {
		if s.at > d {
			break
		}
		n = s.total
	}
	return n
}

// maxWindow returns the most bytes that any closed window of length w carried.
func maxWindow(ss []sample, w time.Duration) int64 {
	var most int64
	j := 0
	for i := range ss {
		for j+1 < len(ss) && ss[j+1].at <= ss[i].at+w {
			j++
		}
		var before int64
		if i > 0 {
			before = ss[i-1].total
		}
		most = max(most, ss[j].total-before)
	}
	return most
}

// runCopy copies size bytes (or, with size < 0, endlessly until ctx ends) at rate inside the
// caller's bubble and returns the recorder and the copy's result.
func runCopy(ctx context.Context, rate, size int64) (*recorder, int64, error) {
	rec := &recorder{start: time.Now()}
	var src io.Reader = zeros{}
	if size >= 0 {
		src = io.LimitReader(zeros{}, size)
	}
	n, err := relay.Copy(ctx, rec, src, relay.CopyOptions{Bucket: ratelimit.NewBucket(rate)})
	return rec, n, err
}

// TestCopyFirstBurst checks that a limited copy starts with exactly one burst, at once, and
// then waits for the bucket to refill before the next chunk.
func TestCopyFirstBurst(t *testing.T) {
	for _, rate := range []int64{1000, 64 << 10, 1 << 20, 100 << 20, 1 << 30} {
		synctest.Test(t, func(t *testing.T) {
			burst := int64(ratelimit.Burst(rate))
			rec, n, err := runCopy(t.Context(), rate, 4*burst)
			if err != nil || n != 4*burst {
				t.Fatalf("rate %d: copied %d, %v; want %d, nil", rate, n, err, 4*burst)
			}
			ss := rec.snapshot()
			if got := at(ss, 0); got != burst {
				t.Errorf("rate %d: %d bytes at t=0; want one burst, %d", rate, got, burst)
			}
			// The next chunk needs burst/rate seconds of refill.
			refill := time.Duration(float64(burst) / float64(rate) * float64(time.Second))
			if got := at(ss, refill-time.Microsecond); got != burst {
				t.Errorf("rate %d: %d bytes just before %v; want still %d", rate, got, refill, burst)
			}
			if got := at(ss, refill+time.Microsecond); got != 2*burst {
				t.Errorf("rate %d: %d bytes just after %v; want %d", rate, got, refill, 2*burst)
			}
			if end := ss[len(ss)-1].at; end < 3*refill-time.Microsecond || end > 3*refill+time.Microsecond {
				t.Errorf("rate %d: 4 bursts took %v; want 3 refills, %v", rate, end, 3*refill)
			}
		})
	}
}

// TestCopyLongRunRate checks the chunked copy against the spec's bounds on a fake clock:
// the long-run slope is the rate, no 1-second window carries more than 1.05 x rate + 64 KiB
// (first second included), and a 100 ms window no more than about 1.16 x its share.
func TestCopyLongRunRate(t *testing.T) {
	for _, rate := range []int64{3000, 100 << 10, 1 << 20, 32 << 20, 1 << 30} {
		synctest.Test(t, func(t *testing.T) {
			const run = 20 * time.Second
			ctx, cancel := context.WithTimeout(t.Context(), run)
			defer cancel()
			rec, _, err := runCopy(ctx, rate, -1)
			// x/time/rate gives up early when the wait would pass the deadline.
			if err == nil {
				t.Fatalf("rate %d: endless copy ended without an error", rate)
			}
			ss := rec.snapshot()
			burst := float64(ratelimit.Burst(rate))
			for _, s := range ss {
				// A token bucket never lets more than a full bucket plus the refill through,
				// and (the source being endless) never falls a bucket behind.
				if hi := burst + float64(rate)*s.at.Seconds(); float64(s.total) > hi+0.5 {
					t.Fatalf("rate %d: %d bytes at %v, over the bucket's %.0f", rate, s.total, s.at, hi)
				}
				if lo := float64(rate)*s.at.Seconds() - burst; float64(s.total) < lo-0.5 {
					t.Fatalf("rate %d: %d bytes at %v, under %.0f", rate, s.total, s.at, lo)
				}
			}
			// Slope from 5 s to the end, where the first burst no longer counts.
			first, last := at(ss, 5*time.Second), ss[len(ss)-1]
			slope := float64(last.total-first) / (last.at - 5*time.Second).Seconds()
			if d := slope/float64(rate) - 1; d > 0.03 || d < -0.03 {
				t.Errorf("rate %d: long-run slope %.0f B/s, %+.2f%% off", rate, slope, 100*d)
			}
			if got, bound := maxWindow(ss, time.Second), 1.05*float64(rate)+64<<10; float64(got) > bound {
				t.Errorf("rate %d: a 1 s window carried %d bytes; bound %.0f", rate, got, bound)
			}
			share := float64(rate) / 10
			if got := maxWindow(ss, 100*time.Millisecond); float64(got) > 1.2*share && float64(got) > burst+share {
				t.Errorf("rate %d: a 100 ms window carried %d bytes, %.2f x its share", rate, got, float64(got)/share)
			}
		})
	}
}

// TestCopyCancelWhileWaiting checks that a limited copy waiting for tokens returns at once,
// with the context's error and the bytes already written, when the context ends.
func TestCopyCancelWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate = 1000 // one burst a second
		ctx, cancel := context.WithCancel(t.Context())
		type result struct {
			n   int64
			err error
		}
		done := make(chan result, 1)
		go func() {
			_, n, err := runCopy(ctx, rate, -1)
			done <- result{n, err}
		}()
		time.Sleep(1500 * time.Millisecond) // fake time: two bursts are out, the third waits
		synctest.Wait()
		start := time.Now()
		cancel()
		r := <-done
		if !errors.Is(r.err, context.Canceled) || r.n != 2*rate {
			t.Fatalf("copy returned %d, %v; want %d, context.Canceled", r.n, r.err, 2*rate)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("copy took %v to see the cancellation", waited)
		}
	})
}

// stallingRecorder is a recorder whose every nth write is held up for stall, as a busy
// machine holds up a copy.
type stallingRecorder struct {
	recorder
	n, every int
	stall    time.Duration
}

func (s *stallingRecorder) Write(p []byte) (int, error) {
	s.n++
	if s.n%s.every == 0 {
		time.Sleep(s.stall)
	}
	return s.recorder.Write(p)
}

// TestCopyCatchesUpAfterStalls runs a limited copy whose writes are held up for 50 ms
// every 20 chunks: the Bucket widens once the copy runs, so the copy keeps its average and
// the 1-second bound (TestBucketBounds shows that a bucket of one chunk loses the time).
func TestCopyCatchesUpAfterStalls(t *testing.T) {
	const rate = 1 << 20
	synctest.Test(t, func(t *testing.T) {
		const run = 20 * time.Second
		ctx, cancel := context.WithTimeout(t.Context(), run)
		defer cancel()
		rec := &stallingRecorder{recorder: recorder{start: time.Now()}, every: 20, stall: 50 * time.Millisecond}
		relay.Copy(ctx, rec, zeros{}, relay.CopyOptions{Bucket: ratelimit.NewBucket(rate), Progress: func(int64) {}})
		ss := rec.snapshot()
		last := ss[len(ss)-1]
		avg := float64(last.total) / last.at.Seconds()
		if d := avg/rate - 1; d < -0.01 || d > 0.01 {
			t.Errorf("average %.0f B/s, %+.2f%% off the rate despite catching up", avg, 100*d)
		}
		if got, bound := maxWindow(ss, time.Second), 1.05*rate+64<<10; float64(got) > bound {
			t.Errorf("a 1 s window carried %d bytes; bound %.0f", got, bound)
		}
	})
}
