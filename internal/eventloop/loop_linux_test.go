package eventloop

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const waitLimit = 5 * time.Second

// start runs l in a goroutine until the test ends.
func start(t *testing.T, l *Loop) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := recv(t, done, "Run to return"); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func newLoop(t *testing.T) *Loop {
	t.Helper()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// recv waits for a value on ch, failing the test after waitLimit.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// socketpair returns a connected non-blocking pair closed when the test ends.
func socketpair(t *testing.T) [2]int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds
}

func write(t *testing.T, fd int, s string) {
	t.Helper()
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestReadiness(t *testing.T) {
	l := newLoop(t)
	sp := socketpair(t)
	got := make(chan string, 1)
	err := l.Add(sp[0], unix.EPOLLIN|unix.EPOLLET, func(events uint32) {
		buf := make([]byte, 64)
		n, err := unix.Read(sp[0], buf)
		if err != nil {
			t.Errorf("read: %v", err)
			return
		}
		got <- string(buf[:n])
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, l)
	write(t, sp[1], "hello")
	if s := recv(t, got, "readiness callback"); s != "hello" {
		t.Errorf("read %q, want %q", s, "hello")
	}
}

func TestModifyKeepsCallback(t *testing.T) {
	l := newLoop(t)
	sp := socketpair(t)
	got := make(chan uint32, 1)
	if err := l.Add(sp[0], unix.EPOLLET, func(events uint32) { got <- events }); err != nil {
		t.Fatal(err)
	}
	start(t, l)
	modified := make(chan error, 1)
	l.Post(func() { modified <- l.Modify(sp[0], unix.EPOLLIN|unix.EPOLLET) })
	if err := recv(t, modified, "Modify"); err != nil {
		t.Fatal(err)
	}
	write(t, sp[1], "x")
	if ev := recv(t, got, "callback after Modify"); ev&unix.EPOLLIN == 0 {
		t.Errorf("events %#x, want EPOLLIN", ev)
	}
	l.Post(func() { modified <- l.Modify(1<<20, unix.EPOLLIN) })
	if err := recv(t, modified, "Modify"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Modify of unregistered fd: %v, want ENOENT", err)
	}
}

// Handle hands a registered descriptor to a new callback, and the old one hears no more.
func TestHandleSwapsCallback(t *testing.T) {
	l := newLoop(t)
	sp := socketpair(t)
	old, got := make(chan uint32, 8), make(chan string, 1)
	if err := l.Add(sp[0], unix.EPOLLIN|unix.EPOLLET, func(events uint32) { old <- events }); err != nil {
		t.Fatal(err)
	}
	start(t, l)
	handled := make(chan [2]bool, 1)
	l.Post(func() {
		ok := l.Handle(sp[0], func(uint32) {
			buf := make([]byte, 64)
			n, _ := unix.Read(sp[0], buf)
			got <- string(buf[:n])
		})
		handled <- [2]bool{ok, l.Handle(1<<20, func(uint32) {})}
	})
	if h := recv(t, handled, "Handle"); !h[0] || h[1] {
		t.Fatalf("Handle reported %v for the registered fd and %v for an unregistered one, want true, false", h[0], h[1])
	}
	write(t, sp[1], "moved")
	if s := recv(t, got, "the new callback"); s != "moved" {
		t.Errorf("new callback read %q, want %q", s, "moved")
	}
	if len(old) != 0 {
		t.Errorf("the old callback was called %d times after Handle", len(old))
	}
}

func TestPostFromManyGoroutines(t *testing.T) {
	const goroutines, perGoroutine = 8, 100
	l := newLoop(t)
	start(t, l)

	count := 0 // touched only on the loop (the race detector watches it too)
	var inside atomic.Bool
	concurrent := false
	onLoop := func() {
		if inside.Swap(true) {
			concurrent = true
		}
		inside.Store(false)
	}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				l.Post(func() { onLoop(); count++ })
			}
		})
	}
	wg.Wait()
	got := make(chan int, 1)
	l.Post(func() { onLoop(); got <- count })
	if n := recv(t, got, "final Post"); n != goroutines*perGoroutine {
		t.Errorf("ran %d posted funcs, want %d", n, goroutines*perGoroutine)
	}
	if concurrent {
		t.Error("posted funcs ran at the same time")
	}
}

func TestTimers(t *testing.T) {
	l := newLoop(t)
	start(t, l)

	type firing struct {
		name    string
		elapsed time.Duration
	}
	fired := make(chan firing, 10)
	stopped := make(chan bool, 1)
	l.Post(func() {
		t0 := l.Now()
		at := func(name string, d time.Duration) *Timer {
			return l.AfterFunc(d, func() { fired <- firing{name, time.Since(t0)} })
		}
		at("30ms", 30*time.Millisecond)
		at("10ms", 10*time.Millisecond)
		at("20ms", 20*time.Millisecond)
		stopped <- at("stopped", 15*time.Millisecond).Stop()
		at("40ms", 5*time.Millisecond).Reset(40 * time.Millisecond)
	})
	if !recv(t, stopped, "Stop") {
		t.Error("Stop of a pending timer returned false")
	}
	want := []time.Duration{10, 20, 30, 40}
	for _, ms := range want {
		d := ms * time.Millisecond
		f := recv(t, fired, d.String()+" timer")
		if f.name != d.String() {
			t.Fatalf("timer %s fired, want %s", f.name, d)
		}
		if f.elapsed < d {
			t.Errorf("timer %s fired early, after %v", f.name, f.elapsed)
		}
	}

	// Stop after the timer ran reports false; a zero delay still runs.
	after := make(chan bool, 1)
	l.Post(func() {
		var tm *Timer
		tm = l.AfterFunc(0, func() { after <- tm.Stop() })
	})
	if recv(t, after, "zero-delay timer") {
		t.Error("Stop of a timer that ran returned true")
	}
	select {
	case f := <-fired:
		t.Errorf("unexpected timer %s fired", f.name)
	default:
	}
}

// TestRemoveStaleEvent checks that an event collected for a descriptor is
// not delivered after Remove, even when the descriptor number is reused and
// registered again within the same epoll_wait batch.
func TestRemoveStaleEvent(t *testing.T) {
	t.Run("Remove", func(t *testing.T) { testStaleEvent(t, func(l *Loop, fd int) { l.Remove(fd) }) })
	t.Run("CloseFD", func(t *testing.T) {
		testStaleEvent(t, func(l *Loop, fd int) {
			if err := l.CloseFD(fd); err != nil {
				t.Errorf("CloseFD: %v", err)
			}
		})
	})
}

// testStaleEvent drops a descriptor with drop while an event for it is pending in the same
// batch, puts another socket on its number and checks that neither callback sees the event.
func testStaleEvent(t *testing.T, drop func(l *Loop, fd int)) {
	l := newLoop(t)
	a, b := socketpair(t), socketpair(t)
	write(t, a[1], "a")
	write(t, b[1], "b")

	// Both descriptors are readable before Run, so the first epoll_wait
	// returns both. Whichever callback runs first replaces the other.
	type result struct{ first, reused int }
	done := make(chan result, 1)
	var stale []string // appended only on the loop
	handled := false
	replace := func(self, other int) {
		if handled {
			stale = append(stale, "old callback")
			return
		}
		handled = true
		fresh := socketpair(t) // nothing is written to fresh[1]
		drop(l, other)
		// Dup3 (closing other if drop did not) puts an unreadable socket on its number.
		if err := unix.Dup3(fresh[0], other, unix.O_CLOEXEC); err != nil {
			t.Errorf("dup3: %v", err)
		}
		err := l.Add(other, unix.EPOLLIN|unix.EPOLLET, func(uint32) {
			stale = append(stale, "new callback")
		})
		if err != nil {
			t.Errorf("re-add: %v", err)
		}
		// Posted funcs run after the whole batch has been dispatched.
		l.Post(func() { done <- result{self, other} })
	}
	for _, fd := range []int{a[0], b[0]} {
		other := a[0] + b[0] - fd
		if err := l.Add(fd, unix.EPOLLIN|unix.EPOLLET, func(uint32) { replace(fd, other) }); err != nil {
			t.Fatal(err)
		}
	}
	start(t, l)
	recv(t, done, "batch")
	got := make(chan []string, 1)
	l.Post(func() { got <- stale })
	if s := recv(t, got, "result"); len(s) > 0 {
		t.Errorf("stale event delivered to %v", s)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	l := newLoop(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	ran := make(chan struct{})
	l.Post(func() { close(ran) })
	recv(t, ran, "loop to start")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}

	posted := make(chan struct{})
	go func() {
		l.Post(func() { t.Error("func posted after Run returned was run") })
		close(posted)
	}()
	recv(t, posted, "Post after Run returned")
	if err := l.Run(context.Background()); err == nil {
		t.Error("second Run returned nil")
	}
}

// BeforeWait runs before every wait, after the callbacks of the round before, and once
// more when Run returns.
func TestBeforeWait(t *testing.T) {
	l := newLoop(t)
	var rounds, seen int // loop-only
	l.BeforeWait(func() { rounds++ })
	done := make(chan int, 1)
	l.Post(func() {
		seen = rounds
		l.Post(func() { done <- rounds - seen })
	})
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan error, 1)
	go func() { finished <- l.Run(ctx) }()
	if d := recv(t, done, "second post"); d < 1 {
		t.Errorf("no BeforeWait between two rounds (%d)", d)
	}
	before := make(chan int, 1)
	l.Post(func() { before <- rounds })
	n := recv(t, before, "count")
	cancel()
	if err := recv(t, finished, "Run to return"); err != nil {
		t.Fatal(err)
	}
	if rounds <= n {
		t.Errorf("BeforeWait not run when Run returned (%d, %d)", rounds, n)
	}
}

// Yielded turns run one a round, oldest first, after the round's events: three callbacks
// that always have work left and yield each time share the loop in turn, a descriptor that
// becomes ready meanwhile is served in the very next round, and the loop does not wait for
// events while turns are queued (nothing else wakes it in the first part).
func TestYieldOneTurnPerRound(t *testing.T) {
	l := newLoop(t)
	start(t, l)

	// Alone: 3 x 20 turns with no event, timer or post to wake the loop.
	done := make(chan int, 1)
	l.Post(func() {
		runs := 0
		for range 3 {
			left := 20
			var turn func()
			turn = func() {
				runs++
				if left--; left > 0 {
					l.Yield(turn)
				} else if runs == 60 {
					done <- runs
				}
			}
			l.Yield(turn)
		}
	})
	if got := recv(t, done, "60 yielded turns"); got != 60 {
		t.Fatalf("%d turns ran, want 60", got)
	}

	// With a marker posted every round: the log is one turn between markers, A B C A B C
	// ...; a byte written during a turn is read at the start of the next round.
	fds := socketpair(t)
	var log []string
	finished := make(chan []string, 1)
	l.Post(func() {
		if err := l.Add(fds[0], unix.EPOLLIN|unix.EPOLLET, func(uint32) {
			var b [8]byte
			unix.Read(fds[0], b[:])
			log = append(log, "ready")
		}); err != nil {
			t.Error(err)
		}
		rounds := 0
		var mark func()
		mark = func() {
			log = append(log, "|")
			if rounds++; rounds < 40 {
				l.Post(mark)
			} else {
				finished <- log
			}
		}
		l.Post(mark)
		for _, name := range []string{"A", "B", "C"} {
			n := 0
			var turn func()
			turn = func() {
				log = append(log, name)
				if n++; n == 3 && name == "B" {
					unix.Write(fds[1], []byte{1})
				}
				l.Yield(turn)
			}
			l.Yield(turn)
		}
	})
	got := recv(t, finished, "40 rounds")
	var rounds [][]string // the log between markers
	round := []string{}
	for _, s := range got {
		if s == "|" {
			rounds = append(rounds, round)
			round = []string{}
			continue
		}
		round = append(round, s)
	}
	var turns []string
	for i, r := range rounds {
		if len(r) > 0 && r[0] == "ready" {
			if i == 0 || !slices.Equal(rounds[i-1], []string{"B"}) || len(turns) != 8 {
				t.Fatalf("the descriptor was served in round %d, not the one after B's third turn: %v", i, got)
			}
			r = r[1:]
		}
		if len(r) != 1 || r[0] == "ready" {
			t.Fatalf("round %d ran %v, want one turn: %v", i, r, got)
		}
		turns = append(turns, r[0])
	}
	if !slices.Contains(got, "ready") {
		t.Fatalf("the descriptor was never served: %v", got)
	}
	for i, s := range turns {
		if want := []string{"A", "B", "C"}[i%3]; s != want {
			t.Fatalf("turn %d is %s, want %s (oldest first): %v", i, s, want, got)
		}
	}
}
