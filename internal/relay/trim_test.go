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
