package relay

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// DefaultTrimQuiet is how long no user-space relay must have run before a Trimmer gives
// their memory back.
const DefaultTrimQuiet = 2 * time.Second

// Trimmer gives the memory that user-space relays (Join) used back to the system once
// none has run for a while. Their buffers (up to 256 KiB a direction on a TLS side) are
// freed when a relay ends, but Go collects them only when the heap grows again and returns
// the pages later still, so a process that served a burst of clients and went idle kept
// their buffers in its RSS for minutes. A Trimmer waits until no relay has run for its
// quiet time, then collects and returns the free pages once (freeMemory). A nil
// *Trimmer does nothing. Its methods are safe for simultaneous use.
type Trimmer struct {
	quiet time.Duration
	free  func() // freeMemory; a test seam

	mu     sync.Mutex
	active int  // relays running
	used   bool // a relay ran since the last trim
	timer  *time.Timer
	trims  int // memory given back so often
}

// NewTrimmer returns a Trimmer with the given quiet time (DefaultTrimQuiet when 0).
func NewTrimmer(quiet time.Duration) *Trimmer {
	if quiet <= 0 {
		quiet = DefaultTrimQuiet
	}
	return &Trimmer{quiet: quiet, free: freeMemory}
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
	if t.timer != nil {
		t.timer.Stop()
	}
}

// end counts a relay that ended; the last one arms the trim.
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

// Released tells t that memory was let go outside a relay (a TLS link closed, say): a
// trim follows the quiet time, as after the end of a relay, unless relays run.
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

// armLocked (re)starts the quiet time; t.mu is held.
func (t *Trimmer) armLocked() {
	if t.timer == nil {
		t.timer = time.AfterFunc(t.quiet, t.trim)
		return
	}
	t.timer.Reset(t.quiet)
}

// trim returns the memory if no relay started since the timer was armed.
func (t *Trimmer) trim() {
	t.mu.Lock()
	due := t.active == 0 && t.used
	if due {
		t.used = false
		t.trims++
	}
	t.mu.Unlock()
	if due {
		t.free()
	}
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
