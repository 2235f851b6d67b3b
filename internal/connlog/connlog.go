// Package connlog prints the per-connection log lines that tcp-pf, listentwo and connecttwo
// share, so every tool reports opens, closes, refusals and failures in one shape that a
// person can read and grep or awk can split:
//
//	2026-11-26T05:39:10.123Z open #7 192.0.2.9:51234 -> 127.0.0.1:22
//	2026-11-26T05:39:12.456Z close #7 192.0.2.9:51234 -> 127.0.0.1:22 up=1048576 (1.00 MiB, 512.00 KiB/s) down=2048 (2.00 KiB, 1.00 KiB/s) time=2.333s end="client closed"
//	2026-11-26T05:39:13.000Z refused 198.51.100.7:40000: not in the allow list
package connlog

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"

	"shd-tcp-tools/internal/meter"
)

// Logger writes one line per event, prefixed with a timestamp. Safe for simultaneous use.
// A nil *Logger discards everything.
type Logger struct {
	mu  sync.Mutex
	out io.Writer
	now func() time.Time

	parent  *Logger      // set for a Buffer: where Flush writes
	pending bytes.Buffer // a Buffer's lines not yet flushed
}

// New returns a Logger writing to out.
func New(out io.Writer) *Logger { return &Logger{out: out, now: time.Now} }

// Buffer returns a Logger that keeps its lines until Flush writes all of them to l in one
// write: for an event loop, which logs the events of a round and flushes before it waits.
func (l *Logger) Buffer() *Logger {
	if l == nil {
		return nil
	}
	return &Logger{now: l.now, parent: l}
}

// Flush writes the lines a Buffer holds to its parent Logger. It does nothing for a Logger
// that is not a Buffer.
func (l *Logger) Flush() {
	if l == nil || l.parent == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending.Len() == 0 {
		return
	}
	p := l.parent
	p.mu.Lock()
	_, _ = p.out.Write(l.pending.Bytes())
	p.mu.Unlock()
	l.pending.Reset()
}

// Printf writes one free-form event line.
func (l *Logger) Printf(format string, args ...any) {
	if l == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	var out io.Writer = &l.pending
	if l.parent == nil {
		out = l.out
	}
	fmt.Fprintf(out, "%s %s\n", l.now().UTC().Format("2006-01-02T15:04:05.000Z"), msg)
}

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
