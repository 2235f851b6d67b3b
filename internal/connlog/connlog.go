// Package connlog prints the per-connection log lines that tcp-pf, listentwo and connecttwo
// share, so every tool reports opens, closes, refusals and failures in one shape that a
// person can read and grep or awk can split:
//
//	2026-11-26T05:39:10.123Z open #7 192.0.2.9:51234 -> 127.0.0.1:22
//	2026-11-26T05:39:12.456Z close #7 192.0.2.9:51234 -> 127.0.0.1:22 up=1048576 (1.00 MiB, 512.00 KiB/s) down=2048 (2.00 KiB, 1.00 KiB/s) time=2.333s end="client closed"
//	2026-11-26T05:39:13.000Z refused 198.51.100.7:40000: not in the allow list
//
// With Options.Format JSON, each event is one JSON object a line instead, with the same
// fields under stable names (docs/logging.md); with Options.Quiet, only lines of level
// Warning and Error are written. A line is formatted by appending to a buffer the Logger
// reuses (no fmt, no time.Format): an event loop's Buffer, stamped with the loop's time of
// the round, formats its lines without allocating.
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
	"strconv"
	"sync"
	"syscall"
	"time"

	"shd-tcp-tools/internal/meter"
)

// Level is how much a line matters. A quiet Logger (Options.Quiet, the tools' -q) writes
// Warning and Error lines only.
type Level uint8

// The levels, from the least to the most important.
const (
	Info    Level = iota // an event of normal service: open, close, refused, listening
	Warning              // something an operator should look at: a host set aside, a lock held
	Error                // a connection that failed
)

// String returns the level's name as JSON lines give it: "info", "warning", "error".
func (v Level) String() string {
	switch v {
	case Info:
		return "info"
	case Warning:
		return "warning"
	default:
		return "error"
	}
}

// Format is how a Logger writes its lines.
type Format uint8

// The formats: Text is the default.
const (
	Text Format = iota // one line of words per event, as in the package comment
	JSON               // one JSON object per event, one a line (see docs/logging.md)
)

// String returns the format's name: "text" or "json".
func (f Format) String() string {
	if f == JSON {
		return "json"
	}
	return "text"
}

// ParseFormat returns the Format named by s, "text" or "json", as --log-format takes it.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "text":
		return Text, nil
	case "json":
		return JSON, nil
	}
	return Text, fmt.Errorf("log format %q: want text or json", s)
}

// Options says what a Logger writes and how; the zero value is every line, as text.
type Options struct {
	Format Format
	Quiet  bool // Warning and Error lines only
}

// Logger writes one line per event, prefixed with a timestamp, without blocking. Safe for
// simultaneous use. A nil *Logger discards everything.
type Logger struct {
	mu  sync.Mutex
	now func() time.Time
	q   *queue // where the lines go, shared by a Logger and its Buffers
	opt Options

	buffer  bool       // a Buffer: lines wait in pending until Flush
	pending []byte     // the lines not yet queued (a Buffer), or the one being written
	scratch []byte     // a free-form message before it is quoted for JSON
	stamp   stampCache // the text of the last timestamp written
}

// MaxQueued bounds the bytes of log lines waiting to be written; lines beyond it are
// dropped and counted. With a line of about 200 bytes that is some 650 lines: several
// rounds of a busy event loop, so a stderr that keeps up never loses one.
const MaxQueued = 128 << 10

// DrainWait bounds how long Drain waits for the queued lines to be written.
const DrainWait = time.Second

// New returns a Logger writing every line as text to out; see NewWith.
func New(out io.Writer) *Logger { return NewWith(out, Options{}) }

// NewWith returns a Logger writing to out, as o says, from a goroutine of its own, which
// runs while there are lines to write. Writes to out must be safe to make from that
// goroutine; they may block (a full pipe) without holding up the Logger's callers.
func NewWith(out io.Writer, o Options) *Logger {
	return &Logger{now: time.Now, opt: o, q: &queue{out: out, max: MaxQueued, direct: directWriter(out), format: o.Format}}
}

// Buffer returns a Logger that keeps its lines until Flush queues all of them in one go:
// for an event loop, which logs the events of a round and flushes before it waits.
func (l *Logger) Buffer() *Logger {
	if l == nil {
		return nil
	}
	return l.BufferAt(l.now)
}

// BufferAt returns a Buffer whose lines are stamped with the time now gives: an event
// loop's time of the round, read once for all the lines of the round. now is called only
// by the Buffer's own callers, never by the writer goroutine, so it may be a clock that is
// not safe off the loop.
func (l *Logger) BufferAt(now func() time.Time) *Logger {
	if l == nil {
		return nil
	}
	return &Logger{now: now, q: l.q, opt: l.opt, buffer: true}
}

// Enabled reports whether l writes lines of level v: false for a nil Logger, and for Info
// when l is quiet. A caller may use it to skip the work of preparing a line.
func (l *Logger) Enabled(v Level) bool {
	return l != nil && (v >= Warning || !l.opt.Quiet)
}

// Flush queues the lines a Buffer holds; they go out in one write unless some must be
// dropped. It does nothing for a Logger that is not a Buffer, and never blocks.
func (l *Logger) Flush() {
	if l == nil || !l.buffer {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) > 0 {
		l.q.add(l.pending)
		l.pending = l.pending[:0]
	}
}

// Buffered returns the bytes of the lines a Buffer holds, not yet flushed: 0 for a Logger
// that is not a Buffer.
func (l *Logger) Buffered() int {
	if l == nil || !l.buffer {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// Drain waits, at most DrainWait, until every queued line is written and a count of
// dropped lines, if any, is reported: what a tool does before it exits. The Logger stays
// usable. Called on a Buffer, it flushes it first.
func (l *Logger) Drain() {
	if l == nil {
		return
	}
	l.Flush()
	l.q.drain(DrainWait)
}

// begin locks l and starts a line for event at level v: the timestamp, and in JSON the
// fields every object has. The text words of the event follow, then end.
func (l *Logger) begin(v Level, event string) {
	l.mu.Lock()
	if l.opt.Format == JSON {
		b := append(l.pending, `{"time":"`...)
		b = l.stamp.append(b, l.now())
		b = append(b, `","level":"`...)
		b = append(b, v.String()...)
		b = append(b, `","event":"`...)
		b = append(b, event...)
		l.pending = append(b, '"')
	} else {
		l.pending = append(l.stamp.append(l.pending, l.now()), ' ')
	}
}

// end finishes the line begin started, queues it unless l is a Buffer, and unlocks l.
func (l *Logger) end() {
	if l.opt.Format == JSON {
		l.pending = append(l.pending, '}')
	}
	l.pending = append(l.pending, '\n')
	if !l.buffer {
		l.q.add(l.pending)
		l.pending = l.pending[:0]
	}
	l.mu.Unlock()
}

// Printf writes one free-form line of level Info.
func (l *Logger) Printf(format string, args ...any) { l.Logf(Info, format, args...) }

// Warnf writes one free-form line of level Warning.
func (l *Logger) Warnf(format string, args ...any) { l.Logf(Warning, format, args...) }

// Logf writes one free-form line of level v: in JSON, its text is the "msg" field.
func (l *Logger) Logf(v Level, format string, args ...any) {
	if !l.Enabled(v) {
		return
	}
	l.begin(v, "message")
	if l.opt.Format == JSON {
		l.scratch = fmt.Appendf(l.scratch[:0], format, args...)
		l.pending = jsonStr(l.pending, "msg", string(l.scratch))
	} else {
		l.pending = fmt.Appendf(l.pending, format, args...)
	}
	l.end()
}

// Open logs a relayed connection being set up: client -> dest.
func (l *Logger) Open(id uint64, client, dest string) {
	if !l.Enabled(Info) {
		return
	}
	l.begin(Info, "open")
	if l.opt.Format == JSON {
		l.pending = jsonConn(l.pending, id, client, dest)
	} else {
		l.pending = l.appendConn(append(l.pending, "open #"...), id, client, dest)
	}
	l.end()
}

// jsonConn appends a connection's fields: id, client, dest.
func jsonConn(b []byte, id uint64, client, dest string) []byte {
	return jsonStr(jsonStr(jsonUint(b, "id", id), "client", client), "dest", dest)
}

// appendConn appends the words "ID CLIENT -> DEST" of a text line.
func (l *Logger) appendConn(b []byte, id uint64, client, dest string) []byte {
	b = strconv.AppendUint(b, id, 10)
	b = append(append(b, ' '), client...)
	b = append(append(b, " -> "...), dest...)
	return b
}

// Close logs the end of a relayed connection with the bytes and average rate of each
// direction (up: client to dest, down: dest to client), its duration, and how it ended.
func (l *Logger) Close(id uint64, client, dest string, up, down uint64, d time.Duration, end string) {
	if !l.Enabled(Info) {
		return
	}
	l.begin(Info, "close")
	if l.opt.Format == JSON {
		l.pending = jsonConn(l.pending, id, client, dest)
		l.pending = jsonUint(l.pending, "up", up)
		l.pending = jsonFloat(l.pending, "up_rate", meter.BytesPerSecond(up, d), 0)
		l.pending = jsonUint(l.pending, "down", down)
		l.pending = jsonFloat(l.pending, "down_rate", meter.BytesPerSecond(down, d), 0)
		l.pending = jsonFloat(l.pending, "seconds", d.Seconds(), 3)
		l.pending = jsonStr(l.pending, "end", end)
	} else {
		b := l.appendConn(append(l.pending, "close #"...), id, client, dest)
		b = appendDir(append(b, " up="...), up, d)
		b = appendDir(append(b, " down="...), down, d)
		b = strconv.AppendFloat(append(b, " time="...), d.Seconds(), 'f', 3, 64)
		b = appendQuote(append(b, "s end="...), end)
		l.pending = b
	}
	l.end()
}

// appendDir appends a direction's "N (SIZE, RATE)".
func appendDir(b []byte, n uint64, d time.Duration) []byte {
	b = append(strconv.AppendUint(b, n, 10), " ("...)
	b = append(meter.AppendSize(b, n), ", "...)
	return append(meter.AppendRate(b, n, d), ')')
}

// Refused logs a client turned away before anything was relayed.
func (l *Logger) Refused(client, why string) {
	if !l.Enabled(Info) {
		return
	}
	l.begin(Info, "refused")
	if l.opt.Format == JSON {
		l.pending = jsonStr(l.pending, "client", client)
		l.pending = jsonStr(l.pending, "reason", why)
	} else {
		l.pending = append(append(append(append(l.pending, "refused "...), client...), ": "...), why...)
	}
	l.end()
}

// Failed logs a connection attempt that did not succeed, with the reason.
func (l *Logger) Failed(id uint64, client, dest string, err error) {
	if !l.Enabled(Error) {
		return
	}
	why := "<nil>" // as fmt prints a nil error
	if err != nil {
		why = err.Error()
	}
	l.begin(Error, "failed")
	if l.opt.Format == JSON {
		l.pending = jsonConn(l.pending, id, client, dest)
		l.pending = jsonStr(l.pending, "error", why)
	} else {
		l.pending = append(append(l.appendConn(append(l.pending, "failed #"...), id, client, dest), ": "...), why...)
	}
	l.end()
}

// queue holds the lines waiting to be written to out, and runs the one goroutine that
// writes them. Safe for simultaneous use.
type queue struct {
	out io.Writer
	max int
	// direct writes at once what cannot block (see directWriter); nil when out may block.
	direct func(p []byte) (n int, tried bool)
	format Format // of the count of dropped lines

	mu      sync.Mutex
	lines   []byte        // whole lines, in order
	spare   []byte        // the buffer of the last write, reused
	dropped uint64        // lines dropped and not yet reported
	gone    bool          // out's reader went away (EPIPE): nothing more is written
	idle    chan struct{} // closed when the running writer ends; nil when none runs
}

// add queues the whole lines in p, as many as fit, and counts the rest as dropped.
func (q *queue) add(p []byte) {
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
	q.startLocked()
}

// startLocked starts the writer if there is something to write and none runs.
func (q *queue) startLocked() {
	if q.idle != nil || q.gone || (len(q.lines) == 0 && q.dropped == 0) {
		return
	}
	q.idle = make(chan struct{})
	go q.write()
}

// write writes the queued lines, then the count of those dropped while it could not, until
// nothing is left; then it ends, and the next line starts it again. A failed write loses
// its lines (counted); the next batch is still tried, but a count alone is not retried
// until more lines come or Drain asks.
func (q *queue) write() {
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
			if _, err = q.out.Write(appendDropped(nil, q.format, time.Now(), dropped)); err != nil {
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
func (q *queue) drain(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for range 2 {
		q.mu.Lock()
		q.startLocked()
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

// appendDropped appends the line that reports n dropped lines, a warning.
func appendDropped(b []byte, f Format, t time.Time, n uint64) []byte {
	var c stampCache
	const why = "stderr could not take them (not read, or a write failed)"
	if f == JSON {
		b = c.append(append(b, `{"time":"`...), t)
		b = append(b, `","level":"warning","event":"dropped"`...)
		b = jsonUint(b, "count", n)
		return append(jsonStr(b, "reason", why), "}\n"...)
	}
	b = append(strconv.AppendUint(append(c.append(b, t), " dropped "...), n, 10), " log lines: "...)
	return append(append(b, why...), '\n')
}

func countLines(p []byte) uint64 { return uint64(bytes.Count(p, []byte("\n"))) }
