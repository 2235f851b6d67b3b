package relay

import (
	"sync/atomic"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestTrimmer: the memory is given back once, after the last relay of a burst ended and
// none started for the quiet time; never while a relay runs, and not again while idle.
func TestTrimmer(t *testing.T) {
	var trims atomic.Int32
	tr := NewTrimmer(20 * time.Millisecond)
	tr.free = func() { trims.Add(1) }
	tr.heap = growingHeap()

	tr.begin()
	tr.begin()
	tr.end()
	time.Sleep(60 * time.Millisecond) // longer than the quiet time, with a relay still running
	if n := trims.Load(); n != 0 {
		t.Fatalf("trimmed %d times while a relay ran", n)
	}
	tr.end()
	testkit.WaitUntil(t, testkit.Timeout, "the trim after the last relay", func() bool { return trims.Load() == 1 })

	// Idle: a trim is armed only by a relay that ran.
	tr.begin()
	tr.end()
	tr.begin() // starts again within the quiet time: the armed trim must not count it idle
	time.Sleep(60 * time.Millisecond)
	if n := trims.Load(); n != 1 {
		t.Fatalf("trimmed %d times, want 1: a relay started within the quiet time", n)
	}
	tr.end()
	testkit.WaitUntil(t, testkit.Timeout, "the second trim", func() bool { return trims.Load() == 2 })
	time.Sleep(60 * time.Millisecond)
	if n := trims.Load(); n != 2 {
		t.Fatalf("trimmed %d times while idle, want 2", n)
	}

	// Memory let go outside a relay (a link closed) is given back too.
	tr.Released()
	testkit.WaitUntil(t, testkit.Timeout, "the trim after a release", func() bool { return trims.Load() == 3 })
	if n := tr.Trims(); n != 3 {
		t.Errorf("Trims() = %d, want 3", n)
	}

	var none *Trimmer // a nil Trimmer does nothing
	none.Released()
	none.begin()
	none.end()
	if n := none.Trims(); n != 0 {
		t.Errorf("a nil Trimmer's Trims() = %d", n)
	}
}

// TestTrimmerUnderChurn: memory let go again and again, less than the quiet time apart (a
// pool whose links keep being refused and opened again, or clients that come one by one
// after a burst), is still given back within about the quiet time of the first release,
// and while relays come and go: each release or end must not put the trim off again, or
// a process that served a burst kept the burst's heap for as long as the churn went on.
func TestTrimmerUnderChurn(t *testing.T) {
	for _, c := range []struct {
		name string
		step func(*Trimmer)
	}{
		{"releases", func(tr *Trimmer) { tr.Released() }},
		{"short relays", func(tr *Trimmer) { tr.begin(); tr.end() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var trims atomic.Int32
			const quiet = 40 * time.Millisecond
			tr := NewTrimmer(quiet)
			tr.free = func() { trims.Add(1) }
			tr.heap = growingHeap()
			start := time.Now()
			for trims.Load() == 0 && time.Since(start) < 20*quiet {
				c.step(tr)
				time.Sleep(quiet / 8) // the churn's pace, not a synchronisation
			}
			if trims.Load() == 0 {
				t.Fatalf("no trim in %v of %s every %v with a quiet time of %v", time.Since(start).Round(time.Millisecond), c.name, quiet/8, quiet)
			}
		})
	}
}

// growingHeap is a heap seam for a Trimmer that grows by 1 GiB each time it is read, so
// that every trim due has memory worth giving back.
func growingHeap() func() uint64 {
	var n atomic.Uint64
	return func() uint64 { return n.Add(1 << 30) }
}

// TestTrimmerSkipsWhenLittleToGiveBack: a trim due collects only if the heap grew by
// trimSlack or more since the last trim. Clients that come one by one reuse the pooled
// buffers; collecting every quiet time would empty the pool each time, and every client
// would pay for new buffers (measured before: a TLS client every 0.1 s cost listentwo 40-60%
// more CPU, a trim each 2 s of about 10 ms). The first trim is always made.
func TestTrimmerSkipsWhenLittleToGiveBack(t *testing.T) {
	var trims atomic.Int32
	var heap atomic.Uint64
	heap.Store(50 << 20)
	tr := NewTrimmer(10 * time.Millisecond)
	tr.free = func() { trims.Add(1); heap.Store(10 << 20) } // a collection leaves the live heap
	tr.heap = heap.Load

	tr.Released()
	testkit.WaitUntil(t, testkit.Timeout, "the first trim", func() bool { return trims.Load() == 1 })
	for i := range 5 { // the heap grows by less than trimSlack: nothing worth a collection
		grew := uint64(i+1) * (trimSlack / 8)
		heap.Store(10<<20 + grew)
		before := tr.checkCount()
		tr.Released()
		testkit.WaitUntil(t, testkit.Timeout, "the trim's check", func() bool { return tr.checkCount() > before })
		if n := trims.Load(); n != 1 {
			t.Fatalf("trimmed %d times, want 1: the heap grew by %d bytes only since the last trim", n, grew)
		}
	}
	heap.Store(10<<20 + trimSlack)
	tr.Released()
	testkit.WaitUntil(t, testkit.Timeout, "the trim once the heap grew by trimSlack", func() bool { return trims.Load() == 2 })
}
