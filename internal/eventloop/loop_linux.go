// Package eventloop runs descriptor readiness callbacks (epoll), timers and
// posted functions one at a time on a single goroutine, so that many
// connections can be driven as state machines without a goroutine each.
package eventloop

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Loop runs, on one goroutine, callbacks for descriptor readiness (epoll),
// timers, and functions posted from other goroutines. Except for Post, its
// methods must be called only from callbacks running on the loop (or before
// Run starts).
type Loop struct {
	epfd, evfd int

	// Loop-thread state.
	handlers []handler // indexed by fd
	gen      uint32    // generation of the last registration
	timers   timerHeap
	seq      uint64 // arming order, to keep equal deadlines FIFO
	now      time.Time
	stop     bool
	idle     func()   // run before each wait, see BeforeWait
	scratch  []byte   // see Scratch
	yields   []func() // see Yield: oldest first

	mu     sync.Mutex
	posted []func()
	closed bool
}

// handler is the registration of one descriptor; gen 0 means none.
type handler struct {
	gen   uint32
	ready func(events uint32)
}

// New returns a Loop with its epoll and wake-up descriptors open. They are
// closed when Run returns.
func New() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventloop: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventloop: eventfd: %w", err)
	}
	// The wake-up descriptor is marked by Fd -1, which no registration uses.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("eventloop: register eventfd: %w", err)
	}
	return &Loop{epfd: epfd, evfd: evfd}, nil
}

// Run runs the loop on the calling goroutine until ctx is done, when it returns
// nil, or epoll_wait fails; it goes through the Go scheduler every few
// milliseconds (see reschedule). On return it closes
// the loop's own descriptors but not those added by callers.
func (l *Loop) Run(ctx context.Context) error {
	if l.isClosed() {
		return errors.New("eventloop: Run called after loop closed")
	}
	defer l.close()
	stopWake := context.AfterFunc(ctx, func() { l.Post(func() { l.stop = true }) })
	defer stopWake()

	events := make([]unix.EpollEvent, 256)
	scheduled := time.Now() // when the loop last went through the scheduler
	if l.idle != nil {
		defer l.idle()
	}
	for !l.stop {
		if l.idle != nil {
			l.idle()
		}
		armed := l.seq           // timers armed after this wait for the next iteration
		yielded := len(l.yields) // so are turns yielded after it
		n, err := unix.EpollWait(l.epfd, events, l.timeout())
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("eventloop: epoll_wait: %w", err)
		}
		l.now = time.Now()
		for _, ev := range events[:n] {
			if ev.Fd < 0 {
				var buf [8]byte
				unix.Read(l.evfd, buf[:]) // EAGAIN is fine: the counter is already zero
				continue
			}
			fd, gen := int(ev.Fd), uint32(ev.Pad)
			if fd < len(l.handlers) && l.handlers[fd].gen == gen {
				l.handlers[fd].ready(ev.Events)
			}
		}
		l.runTimers(armed)
		l.runYields(yielded)
		l.runPosted()
		if l.now.Sub(scheduled) >= Reschedule {
			runtime.Gosched()
			scheduled = l.now
		}
	}
	return nil
}

// YieldsPerRound is how many yielded turns (see Yield) a loop runs per round.
const YieldsPerRound = 1

// Yield has f run on the loop in a later round, after that round's events and timers, in
// the order turns were yielded; a round runs at most YieldsPerRound of them, and the loop
// does not wait for events while any is queued. It is for a callback that gave up the
// loop with work left (a stream whose source never runs dry): however many such turns
// wait, every round still serves the descriptors that are ready, so a short connection
// beside bulk streams waits for one bulk turn per round, not one per stream.
func (l *Loop) Yield(f func()) { l.yields = append(l.yields, f) }

// runYields runs the oldest yielded turns, at most YieldsPerRound of the first n.
func (l *Loop) runYields(n int) {
	for range min(n, YieldsPerRound) {
		f := l.yields[0]
		l.yields[0] = nil
		l.yields = l.yields[1:]
		f()
	}
}

// BeforeWait sets f to run on the loop before each wait for events and once more when Run
// returns: the place to flush what the callbacks of one round have buffered.
func (l *Loop) BeforeWait(f func()) { l.idle = f }

// timeout returns the epoll_wait timeout in milliseconds.
func (l *Loop) timeout() int {
	l.mu.Lock()
	pending := len(l.posted) > 0
	l.mu.Unlock()
	if pending || len(l.yields) > 0 {
		return 0
	}
	if len(l.timers) == 0 {
		return -1
	}
	d := time.Until(l.timers[0].when)
	if d <= 0 {
		return 0
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond // round up: never fire early
	return int(min(ms, math.MaxInt32))
}

// runTimers runs, in deadline order, the timers due at l.now whose arming
// sequence number is at most seq, so that a timer re-armed with a zero delay
// waits for the next iteration instead of starving descriptors.
func (l *Loop) runTimers(seq uint64) {
	for len(l.timers) > 0 {
		t := l.timers[0]
		if t.when.After(l.now) || t.seq > seq {
			return
		}
		heap.Pop(&l.timers)
		t.f()
	}
}

func (l *Loop) runPosted() {
	l.mu.Lock()
	fs := l.posted
	l.posted = nil
	l.mu.Unlock()
	for i, f := range fs {
		fs[i] = nil
		f()
	}
}

func (l *Loop) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *Loop) close() {
	l.mu.Lock()
	l.closed = true
	l.posted = nil
	unix.Close(l.evfd)
	l.mu.Unlock()
	unix.Close(l.epfd)
}

// Add registers fd with epoll for events (EPOLLIN, EPOLLOUT, EPOLLET, ...)
// and calls ready on the loop with the reported events.
func (l *Loop) Add(fd int, events uint32, ready func(events uint32)) error {
	if fd < 0 || fd > math.MaxInt32 {
		return fmt.Errorf("eventloop: add fd %d: %w", fd, unix.EBADF)
	}
	gen := l.gen + 1
	if gen == 0 {
		gen = 1
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("eventloop: add fd %d: %w", fd, err)
	}
	l.gen = gen
	if fd >= len(l.handlers) {
		l.handlers = append(l.handlers, make([]handler, fd+1-len(l.handlers))...)
	}
	l.handlers[fd] = handler{gen: gen, ready: ready}
	return nil
}

// Handle gives the registered fd a new callback, keeping its registration (no system
// call): how a descriptor is handed from one state machine to another on the loop, such as
// a connection's sockets to its relay once set up. It reports false when fd is not
// registered.
func (l *Loop) Handle(fd int, ready func(events uint32)) bool {
	if fd < 0 || fd >= len(l.handlers) || l.handlers[fd].gen == 0 {
		return false
	}
	l.handlers[fd].ready = ready
	return true
}

// Modify changes the events fd is registered for, keeping its callback.
func (l *Loop) Modify(fd int, events uint32) error {
	if fd < 0 || fd >= len(l.handlers) || l.handlers[fd].gen == 0 {
		return fmt.Errorf("eventloop: modify fd %d: %w", fd, unix.ENOENT)
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(l.handlers[fd].gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return fmt.Errorf("eventloop: modify fd %d: %w", fd, err)
	}
	return nil
}

// Remove unregisters fd and forgets its callback, which is not called again,
// not even for events already collected. Call it before closing fd.
func (l *Loop) Remove(fd int) {
	if fd < 0 || fd >= len(l.handlers) {
		return
	}
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	l.handlers[fd] = handler{}
}

// CloseFD forgets fd's callback and closes fd, which takes it out of the epoll set: one
// system call instead of Remove's two and a close. Events for fd still in the current batch
// are not delivered. fd must not have been duplicated (a duplicate would keep it in the
// set).
func (l *Loop) CloseFD(fd int) error {
	if fd >= 0 && fd < len(l.handlers) {
		l.handlers[fd] = handler{}
	}
	return unix.Close(fd)
}

// ScratchSize is the length of the buffer Scratch returns.
const ScratchSize = 16 << 10

// Scratch returns the loop's one buffer of ScratchSize bytes (made on first use), for a
// callback that reads into it and writes out what it read before it returns: every
// callback on the loop shares it, so nothing may be left in it across callbacks.
func (l *Loop) Scratch() []byte {
	if l.scratch == nil {
		l.scratch = make([]byte, ScratchSize)
	}
	return l.scratch
}

// Now returns the time read at the start of the current loop iteration, or
// the current time before Run starts.
func (l *Loop) Now() time.Time {
	if l.now.IsZero() {
		return time.Now()
	}
	return l.now
}

// Post arranges for f to run on the loop soon. It may be called from any
// goroutine. After Run has returned, f is dropped.
func (l *Loop) Post(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.posted = append(l.posted, f)
	if len(l.posted) == 1 {
		// Wake the loop. Writing under mu keeps evfd open; EAGAIN (counter
		// full) still leaves it readable.
		one := [8]byte{1}
		unix.Write(l.evfd, one[:])
	}
}

// A Timer runs a function once on the loop. Its methods must be called on
// the loop.
type Timer struct {
	l     *Loop
	f     func()
	when  time.Time
	seq   uint64
	index int // in l.timers, or -1
}

// AfterFunc runs f on the loop at Now()+d; if d <= 0, on the next iteration.
func (l *Loop) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{l: l, f: f, index: -1}
	t.Reset(d)
	return t
}

// Stop prevents the timer from running. It reports whether it stopped the
// timer before it ran.
func (t *Timer) Stop() bool {
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.l.timers, t.index)
	return true
}

// Reset arms the timer to run at Now()+d, whether or not it ran or was stopped.
func (t *Timer) Reset(d time.Duration) {
	t.l.seq++
	t.when, t.seq = t.l.Now().Add(max(d, 0)), t.l.seq
	if t.index >= 0 {
		heap.Fix(&t.l.timers, t.index)
	} else {
		heap.Push(&t.l.timers, t)
	}
}

// timerHeap is a min-heap of timers by deadline, then arming order.
type timerHeap []*Timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if c := h[i].when.Compare(h[j].when); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
