package connlog

import (
	"bytes"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestLines(t *testing.T) {
	var b bytes.Buffer
	l := New(&b)
	l.now = func() time.Time { return time.Date(2026, 11, 26, 5, 39, 10, 123e6, time.UTC) }
	l.Open(7, "192.0.2.9:51234", "127.0.0.1:22")
	l.Close(7, "192.0.2.9:51234", "127.0.0.1:22", 1<<20, 2048, 2*time.Second, "client closed")
	l.Refused("198.51.100.7:40000", "not in the allow list")
	l.Failed(8, "192.0.2.9:1", "127.0.0.1:23", errors.New("connection refused"))
	l.Drain()
	want := `2026-11-26T05:39:10.123Z open #7 192.0.2.9:51234 -> 127.0.0.1:22
2026-11-26T05:39:10.123Z close #7 192.0.2.9:51234 -> 127.0.0.1:22 up=1048576 (1.00 MiB, 512.00 KiB/s) down=2048 (2.00 KiB, 1.00 KiB/s) time=2.000s end="client closed"
2026-11-26T05:39:10.123Z refused 198.51.100.7:40000: not in the allow list
2026-11-26T05:39:10.123Z failed #8 192.0.2.9:1 -> 127.0.0.1:23: connection refused
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	// awk-friendly: the close line splits on blanks into stable fields.
	if !regexp.MustCompile(`^\S+ close #7 \S+ -> \S+ up=1048576 `).MatchString(b.String()[bytes.IndexByte(b.Bytes(), '\n')+1:]) {
		t.Fatal("close line fields moved")
	}
	var nilLogger *Logger
	nilLogger.Open(1, "a", "b") // must not panic
}

// writes records each Write call separately.
type writes struct{ calls []string }

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, string(p))
	return len(p), nil
}

// A Buffer keeps its lines until Flush, which hands all of them to the parent in one write.
func TestBuffer(t *testing.T) {
	w := &writes{}
	l := New(w)
	l.now = func() time.Time { return time.Date(2026, 11, 26, 5, 39, 10, 0, time.UTC) }
	b := l.Buffer()
	b.Open(1, "a", "b")
	b.Refused("c", "why")
	l.Drain()
	if len(w.calls) != 0 {
		t.Fatalf("written before Flush: %q", w.calls)
	}
	b.Flush()
	b.Flush() // nothing pending: no write
	l.Drain()
	want := "2026-11-26T05:39:10.000Z open #1 a -> b\n2026-11-26T05:39:10.000Z refused c: why\n"
	if len(w.calls) != 1 || w.calls[0] != want {
		t.Fatalf("writes %q, want one: %q", w.calls, want)
	}
	l.Flush() // not a Buffer: nothing happens
	var nilLogger *Logger
	nilLogger.Buffer().Flush() // must not panic
	nilLogger.Drain()
}

// gate is a writer whose writes wait until it is opened, as a pipe that nobody reads.
type gate struct {
	open    chan struct{}
	entered chan struct{} // closed when the first write waits
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newGate() *gate { return &gate{open: make(chan struct{}), entered: make(chan struct{})} }

func (g *gate) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gate) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}

// While the writer is stuck, logging goes on without waiting: what does not fit in the
// queue is dropped and counted, and once writes go through again the count follows the
// lines that were kept, so kept plus dropped is every line logged.
func TestBlockedWriterDropsAndCounts(t *testing.T) {
	g := newGate()
	l := New(g)
	// The Buffer's clock is the logging goroutine's own (as an event loop's is): -race
	// finds it if the writer, reporting the drops, called it.
	var now time.Time
	b := l.BufferAt(func() time.Time { now = now.Add(time.Millisecond); return now })
	const total = 5000
	// The writer is stuck on the first line before the others come, so that every line
	// dropped is dropped while it waits, and the count comes once, after the kept ones.
	l.Printf("line 0")
	<-g.entered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < total; i++ {
			if i%2 == 0 {
				l.Printf("line %d", i)
			} else {
				b.Open(uint64(i), "192.0.2.1:1", "198.51.100.1:2")
				b.Flush()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logging waited for a writer that does not write")
	}
	close(g.open)
	l.Drain()
	out := g.String()
	m := regexp.MustCompile(`(?m)^\S+ dropped (\d+) log lines: stderr could not take them \(not read, or a write failed\)\n\z`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no count of dropped lines at the end of the output:\n...%s", out[max(0, len(out)-500):])
	}
	dropped, _ := strconv.Atoi(m[1])
	kept := strings.Count(out, "\n") - 1
	if dropped == 0 || kept+dropped != total {
		t.Errorf("%d lines kept and %d dropped, want %d in all, some dropped", kept, dropped, total)
	}
	if len(out)-len(m[0]) > 2*MaxQueued {
		t.Errorf("%d bytes kept while the writer was stuck, want at most about %d", len(out), MaxQueued)
	}
	// Writing works again: new lines go out, with no count line.
	l.Printf("after")
	l.Drain()
	if got := g.String(); !strings.HasSuffix(got, " after\n") || strings.Count(got, " dropped ") != 1 {
		t.Errorf("after the writer recovered:\n...%s", got[max(0, len(got)-300):])
	}
}

// failOnce fails its first write, as a full disk might, and takes the others.
type failOnce struct {
	failed bool
	buf    bytes.Buffer
}

func (f *failOnce) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, syscall.EIO
	}
	return f.buf.Write(p)
}

// A failed write loses its lines, which are counted and reported after the next lines
// that are written, or by Drain at the latest.
func TestFailedWriteReported(t *testing.T) {
	f := &failOnce{}
	l := New(f)
	l.Printf("lost")
	l.Drain()
	l.Printf("kept")
	l.Drain()
	if !regexp.MustCompile(`^\S+ dropped 1 log lines: .*\n\S+ kept\n$`).MatchString(f.buf.String()) {
		t.Errorf("output after a failed write and Drain:\n%s", f.buf.String())
	}
	f = &failOnce{}
	l = New(f)
	l.Printf("lost")
	waitIdle(l)
	l.Printf("kept")
	l.Drain()
	if !regexp.MustCompile(`^\S+ kept\n\S+ dropped 1 log lines: `).MatchString(f.buf.String()) {
		t.Errorf("output after a failed write and then a line:\n%s", f.buf.String())
	}
}

// waitIdle waits until l's writer is not running.
func waitIdle(l *Logger) {
	for {
		l.q.mu.Lock()
		idle := l.q.idle
		l.q.mu.Unlock()
		if idle == nil {
			return
		}
		<-idle
	}
}

// A broken pipe stops the writing for good: no write is tried after it, and logging goes
// on without error (the process does not die: the pipe is not fd 2 here, and the tools
// ignore SIGPIPE).
func TestBrokenPipeStopsWriting(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r.Close()
	l := New(w)
	l.Printf("one")
	l.Drain()
	for range 100 {
		l.Printf("more")
	}
	l.Drain()
	l.q.mu.Lock()
	gone, dropped, idle := l.q.gone, l.q.dropped, l.q.idle
	l.q.mu.Unlock()
	if !gone || dropped != 101 || idle != nil {
		t.Errorf("after EPIPE: gone %v, %d dropped (want 101), writer running %v", gone, dropped, idle != nil)
	}
}
