package relay

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// DefaultTrimQuiet is how long after memory was let go (a relay ended, a TLS link closed)
// a Trimmer gives it back.
const DefaultTrimQuiet = 2 * time.Second

// Trimmer gives the memory that user-space relays (Join) and TLS links used back to the
// system once it was let go. Their buffers (up to 256 KiB a direction on a TLS side) are
// freed when a relay ends, but Go collects them only when the heap grows again and returns
// the pages later still, so a process that served a burst of clients and went idle kept
// their buffers in its RSS for minutes. A Trimmer collects and returns the free pages
// (freeMemory) the quiet time after the first release since its last trim, if no relay
// runs then, or else when the last relay running ends. A release while a trim is due does
// not put it off: links that keep opening and closing after a burst, or clients that come
// one by one, would otherwise hold the burst's heap for as long as they came. A trim due
// collects only when the heap (its objects and the free pages not yet returned) grew by
// trimSlack since the last trim, or the last trim was trimEvery ago: clients that come one
// by one reuse the pooled buffers, and a collection every quiet time would empty the pool
// and make each pay for new ones; but memory that was in use at a trim and let go after it
// (links closed as not needed, 5 s after a burst) does not grow the heap until a
// collection, and is given back trimEvery after that trim at the latest.
// A nil *Trimmer does nothing. Its methods are safe for simultaneous use.
type Trimmer struct {
	quiet time.Duration
	every time.Duration // trimEvery; a test seam
	free  func()        // freeMemory; a test seam
	heap  func() uint64 // heapHeld; a test seam

	mu     sync.Mutex
	active int       // relays running
	used   bool      // a relay ran or memory was let go since the last trim
	at     time.Time // when the timer fires; zero while no trim is due
	timer  *time.Timer
	trims  int       // memory given back so often
	checks int       // trims due, made or not (a test seam)
	after  uint64    // heap() after the last trim; 0 before the first
	last   time.Time // when the last trim was made
}

// trimEvery is how long after a trim one that is due collects whatever the heap's growth.
const trimEvery = 10 * time.Second

// trimSlack is how much the heap must have grown since the last trim for a trim due to
// collect: a few pairs of bulk buffers (256 KiB each) and the garbage of a few handshakes
// are not worth emptying the pools for.
const trimSlack = 4 << 20

// NewTrimmer returns a Trimmer with the given quiet time (DefaultTrimQuiet when 0).
func NewTrimmer(quiet time.Duration) *Trimmer {
	if quiet <= 0 {
		quiet = DefaultTrimQuiet
	}
	return &Trimmer{quiet: quiet, every: trimEvery, free: freeMemory, heap: heapHeld}
}

// heapHeld is the heap's size the system sees: its objects, live or not yet collected,
// and the free pages not returned yet.
func heapHeld() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += v.Value.Uint64()
		}
	}
	return n
}

// freeMemory collects twice, since a sync.Pool keeps what it held before a collection
// until the next one (the read-ahead and frame buffers are pooled), then returns the free
// pages to the system.
func freeMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// begin counts a relay that starts.
func (t *Trimmer) begin() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active++
	t.used = true
}

// end counts a relay that ended; the last one arms the trim unless one is due already.
func (t *Trimmer) end() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active--
	if t.active == 0 {
		t.armLocked()
	}
}

// Released tells t that memory was let go outside a relay (a TLS link closed, a handshake
// ended): a trim follows within the quiet time, as after the end of a relay, or when the
// relays running end.
func (t *Trimmer) Released() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.used = true
	if t.active == 0 {
		t.armLocked()
	}
}

// armLocked makes a trim due within the quiet time: a trim due sooner stays as it is, one
// due later (a check put off until trimEvery after the last trim) is brought forward;
// t.mu is held.
func (t *Trimmer) armLocked() {
	t.armLockedIn(t.quiet)
}

// armLockedIn makes a trim due within d; t.mu is held.
func (t *Trimmer) armLockedIn(d time.Duration) {
	at := time.Now().Add(d)
	if !t.at.IsZero() && !t.at.After(at) {
		return
	}
	t.at = at
	if t.timer == nil {
		t.timer = time.AfterFunc(d, t.trim)
		return
	}
	t.timer.Reset(d)
}

// trim returns the memory if no relay runs and the heap grew by trimSlack since the last
// trim or that trim was trimEvery ago; with relays running, the last to end arms the trim
// again. A trim not worth it yet is checked again trimEvery after the last trim: what was
// let go may be memory that was in use at that trim, which the heap's size does not show.
func (t *Trimmer) trim() {
	t.mu.Lock()
	t.at = time.Time{}
	due := t.active == 0 && t.used
	if due {
		t.used = false
	}
	after, last := t.after, t.last
	t.mu.Unlock()
	if !due {
		return
	}
	wait := time.Duration(0)
	worth := after == 0 || t.heap() >= after+trimSlack
	if !worth {
		wait = t.every - time.Since(last)
		worth = wait <= 0
	}
	if worth {
		t.free()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checks++
	if worth {
		t.trims++
		t.after = max(t.heap(), 1)
		t.last = time.Now()
		return
	}
	t.used = true
	t.armLockedIn(wait)
}

// checkCount returns how many trims were due, made or not.
func (t *Trimmer) checkCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.checks
}

// Trims returns how many times t has given memory back.
func (t *Trimmer) Trims() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.trims
}
