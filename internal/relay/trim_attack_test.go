package relay

import (
	"runtime"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackTrimmerGivesBackWhatWasLiveAtTheLastTrim: with the real heap. Memory that was
// still in use when a trim ran (the links a burst left idle beyond --pool, their TLS
// buffers: connecttwo closes them idleTrim after, listentwo those beyond --max-links) and
// is let go after it (Released) does not grow the heap until a collection, so the heap's
// growth cannot tell it from clients one by one; it must be given back by a trim due
// trimEvery after the last trim at the latest: 32 MiB held at the first trim, dropped,
// then a release every quiet time. The heap the system sees must shrink by most of it.
func TestAttackTrimmerGivesBackWhatWasLiveAtTheLastTrim(t *testing.T) {
	const held = 32 << 20
	tr := NewTrimmer(20 * time.Millisecond)
	tr.every = 300 * time.Millisecond
	bufs := make([][]byte, held>>20)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<20)
		for j := 0; j < len(bufs[i]); j += 4096 {
			bufs[i][j] = 1 // resident
		}
	}
	tr.Released() // the burst's end: a trim while the idle links still hold their memory
	testkit.WaitUntil(t, testkit.Timeout, "the first trim", func() bool { return tr.Trims() == 1 })
	before := heapHeld()
	runtime.KeepAlive(bufs)
	bufs = nil // the links beyond the pool closed
	start := time.Now()
	testkit.WaitUntil(t, testkit.Timeout, "a trim that gives the memory back", func() bool {
		tr.Released() // links closing one after another
		return tr.Trims() == 2
	})
	after := heapHeld()
	t.Logf("heap held %d KiB after the first trim with %d KiB in use, %d KiB after the trim %v after that was let go",
		before>>10, held>>10, after>>10, time.Since(start).Round(time.Millisecond))
	if after+held/2 > before {
		t.Errorf("the trim after %d KiB were let go gave back %d KiB (heap held %d KiB, then %d KiB): memory in use at the last trim and let go since is kept",
			held>>10, (int64(before)-int64(after))>>10, before>>10, after>>10)
	}
}
