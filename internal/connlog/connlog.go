// Package connlog prints the per-connection log lines that tcp-pf, listentwo and connecttwo
// share, so every tool reports opens, closes, refusals and failures in one shape that a
// person can read and grep or awk can split:
//
//	2026-11-26T05:39:10.123Z open #7 192.0.2.9:51234 -> 127.0.0.1:22
//	2026-11-26T05:39:12.456Z close #7 192.0.2.9:51234 -> 127.0.0.1:22 up=1048576 (1.00 MiB, 512.00 KiB/s) down=2048 (2.00 KiB, 1.00 KiB/s) time=2.333s end="client closed"
//	2026-11-26T05:39:13.000Z refused 198.51.100.7:40000: not in the allow list
//
// Logging never holds up the caller: lines go into a bounded queue that one goroutine
// writes out, so an event loop or a relay never waits for stderr. When the queue is full
// (stderr not read, or slower than the events), lines are dropped and counted, and the
// count is reported in one line as soon as a write succeeds again, and by Drain. A broken
// pipe (the reader went away) stops the writing for good; the tools ignore SIGPIPE (see
// cli), so that is an error here, not the death of the process.
package connlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"shd-tcp-tools/internal/meter"
)

// Logger writes one line per event, prefixed with a timestamp, without blocking. Safe for
// simultaneous use. A nil *Logger discards everything.
type Logger struct {
	mu  sync.Mutex
	now func() time.Time
	q   *queue // where the lines go, shared by a Logger and its Buffers

	buffer  bool         // a Buffer: lines wait in pending until Flush
	pending bytes.Buffer // lines not yet queued
}

// MaxQueued bounds the bytes of log lines waiting to be written; lines beyond it are
// dropped and counted. With a line of about 200 bytes that is some 650 lines: several
// rounds of a busy event loop, so a stderr that keeps up never loses one.
const MaxQueued = 128 << 10

// DrainWait bounds how long Drain waits for the queued lines to be written.
const DrainWait = time.Second

// New returns a Logger writing to out from a goroutine of its own, which runs while
// there are lines to write. Writes to out must be safe to make from that goroutine; they
// may block (a full pipe) without holding up the Logger's callers.
func New(out io.Writer) *Logger {
	return &Logger{now: time.Now, q: &queue{out: out, max: MaxQueued, direct: directWriter(out)}}
}

// Buffer returns a Logger that keeps its lines until Flush queues all of them in one go:
// for an event loop, which logs the events of a round and flushes before it waits.
func (l *Logger) Buffer() *Logger {
	if l == nil {
		return nil
	}
	return &Logger{now: l.now, q: l.q, buffer: true}
}

// Flush queues the lines a Buffer holds; they go out in one write unless some must be
// dropped. It does nothing for a Logger that is not a Buffer, and never blocks.
func (l *Logger) Flush() {
	if l == nil || !l.buffer {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending.Len() > 0 {
		l.q.add(l.pending.Bytes(), l.now)
		l.pending.Reset()
	}
}

// Drain waits, at most DrainWait, until every queued line is written and a count of
// dropped lines, if any, is reported: what a tool does before it exits. The Logger stays
// usable. Called on a Buffer, it flushes it first.
func (l *Logger) Drain() {
	if l == nil {
		return
	}
	l.Flush()
	l.q.drain(l.now, DrainWait)
}

// Printf writes one free-form event line.
func (l *Logger) Printf(format string, args ...any) {
	if l == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.pending, "%s %s\n", stamp(l.now()), msg)
	if !l.buffer {
		l.q.add(l.pending.Bytes(), l.now)
		l.pending.Reset()
	}
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Open logs a relayed connection being set up: client -> dest.
func (l *Logger) Open(id uint64, client, dest string) {
	l.Printf("open #%d %s -> %s", id, client, dest)
}

// Close logs the end of a relayed connection with the bytes and average rate of each
// direction (up: client to dest, down: dest to client), its duration, and how it ended.
func (l *Logger) Close(id uint64, client, dest string, up, down uint64, d time.Duration, end string) {
	l.Printf("close #%d %s -> %s up=%d (%s, %s) down=%d (%s, %s) time=%.3fs end=%q",
		id, client, dest, up, meter.Size(up), meter.Rate(up, d), down, meter.Size(down), meter.Rate(down, d), d.Seconds(), end)
}

// Refused logs a client turned away before anything was relayed.
func (l *Logger) Refused(client, why string) {
	l.Printf("refused %s: %s", client, why)
}

// Failed logs a connection attempt that did not succeed, with the reason.
func (l *Logger) Failed(id uint64, client, dest string, err error) {
	l.Printf("failed #%d %s -> %s: %v", id, client, dest, err)
}

// queue holds the lines waiting to be written to out, and runs the one goroutine that
// writes them. Safe for simultaneous use.
type queue struct {
	out io.Writer
	max int
	// direct writes at once what cannot block (see directWriter); nil when out may block.
	direct func(p []byte) (n int, tried bool)

	mu      sync.Mutex
	lines   []byte        // whole lines, in order
	spare   []byte        // the buffer of the last write, reused
	dropped uint64        // lines dropped and not yet reported
	gone    bool          // out's reader went away (EPIPE): nothing more is written
	idle    chan struct{} // closed when the running writer ends; nil when none runs
}

// add queues the whole lines in p, as many as fit, and counts the rest as dropped.
func (q *queue) add(p []byte, now func() time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.gone {
		q.dropped += countLines(p)
		return
	}
	if room := q.max - len(q.lines); len(p) > room {
		keep := bytes.LastIndexByte(p[:max(room, 0)], '\n') + 1
		q.dropped += countLines(p[keep:])
		p = p[:keep]
	}
	if q.direct != nil && q.idle == nil && len(q.lines) == 0 && q.dropped == 0 {
		// Nothing waits before p: write it now if that cannot block, and queue only
		// what is left (a short or failed write), for the writer to try and account.
		n, _ := q.direct(p)
		p = p[n:]
	}
	q.lines = append(q.lines, p...)
	q.startLocked(now)
}

// startLocked starts the writer if there is something to write and none runs.
func (q *queue) startLocked(now func() time.Time) {
	if q.idle != nil || q.gone || (len(q.lines) == 0 && q.dropped == 0) {
		return
	}
	q.idle = make(chan struct{})
	go q.write(now)
}

// write writes the queued lines, then the count of those dropped while it could not, until
// nothing is left; then it ends, and the next line starts it again. A failed write loses
// its lines (counted); the next batch is still tried, but a count alone is not retried
// until more lines come or Drain asks.
func (q *queue) write(now func() time.Time) {
	failed := false
	for {
		q.mu.Lock()
		batch, dropped := q.lines, q.dropped
		if q.gone || (len(batch) == 0 && (dropped == 0 || failed)) {
			close(q.idle)
			q.idle = nil
			q.mu.Unlock()
			return
		}
		q.lines, q.spare, q.dropped = q.spare[:0], nil, 0
		q.mu.Unlock()

		n, err := q.out.Write(batch)
		lost := countLines(batch[min(max(n, 0), len(batch)):]) + dropped
		if err == nil && dropped > 0 {
			// Every line of batch came before every dropped one: the count goes after it.
			lost = 0
			report := fmt.Sprintf("%s dropped %d log lines: stderr could not take them (not read, or a write failed)\n", stamp(now()), dropped)
			if _, err = io.WriteString(q.out, report); err != nil {
				lost = dropped
			}
		}

		q.mu.Lock()
		failed = err != nil
		if failed {
			q.dropped += lost
			if errors.Is(err, syscall.EPIPE) {
				q.gone = true
				q.dropped += countLines(q.lines)
				q.lines = q.lines[:0]
			}
		} else if cap(batch) <= 2*q.max {
			q.spare = batch[:0]
		}
		q.mu.Unlock()
	}
}

// drain starts the writer for what is left (a count of dropped lines included) and waits
// up to d for it to end; a writer that ended on a failed write is given one more try.
func (q *queue) drain(now func() time.Time, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for range 2 {
		q.mu.Lock()
		q.startLocked(now)
		idle := q.idle
		q.mu.Unlock()
		if idle == nil {
			return
		}
		select {
		case <-idle:
		case <-t.C:
			return
		}
	}
}

func countLines(p []byte) uint64 { return uint64(bytes.Count(p, []byte("\n"))) }
