// Package accept is the one accept back-off of every tool that listens: it tells what a
// failed accept(2) means, and when the process is short of descriptors or memory it
// pauses accepting, doubling the pause from 5 ms up to 1 s as net/http does, with a
// bounded number of log lines. tcp-pf's event loops and the tunnel's accepting goroutines
// use the same Backoff.
package accept

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// The back-off's pauses: each shortage doubles the pause, from MinPause up to MaxPause.
const (
	MinPause = 5 * time.Millisecond
	MaxPause = time.Second
	// logEvery is the least time between two back-off log lines.
	logEvery = time.Second
)

// Verdict is what a failed accept means for the listener.
type Verdict int

const (
	// Again: nothing is lost; accept again at once (EINTR, ECONNABORTED, and the network
	// errors of a connection still in the queue that accept(2) passes on).
	Again Verdict = iota
	// Short: the process is out of descriptors (EMFILE, ENFILE) or the kernel out of
	// memory (ENOBUFS, ENOMEM); pause accepting (Backoff), the shortage passes once other
	// connections end.
	Short
	// Fatal: the listener is broken; stop accepting.
	Fatal
)

// Classify tells what err, from accept(2) or a net.Listener's Accept, means. Linux's
// accept(2) passes on a connection's pending network errors, which "should be treated
// like EAGAIN": ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH,
// EOPNOTSUPP, ENETUNREACH. EAGAIN itself is not an error here: the caller waits for
// readiness before it accepts again.
func Classify(err error) Verdict {
	switch {
	case Shortage(err):
		return Short
	case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.ENETDOWN), errors.Is(err, syscall.EPROTO),
		errors.Is(err, syscall.ENOPROTOOPT), errors.Is(err, syscall.EHOSTDOWN),
		errors.Is(err, syscall.ENONET), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENETUNREACH):
		return Again
	}
	return Fatal
}

// Shortage reports whether err is a shortage that passes once other connections end:
// out of descriptors (EMFILE, ENFILE) or of kernel memory (ENOBUFS, ENOMEM). A dial or a
// socket(2) that fails so is one too: the connection accepted then cannot be served.
func Shortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// Backoff pauses accepting while the process is short of descriptors or memory, whether
// accept itself or a connection to a destination ran into the limit: a connection accepted
// then cannot be served, and leaving it in the kernel's backlog lets it wait for one that
// can. However often it fails, and however often it recovers, it gives at most one line
// to log per second, plus one when serving resumes. The zero Backoff is not backing off.
// Safe for simultaneous use.
type Backoff struct {
	mu      sync.Mutex
	delay   time.Duration // the last pause; zero when not backing off
	until   time.Time     // accepting is paused until then
	fails   int           // failures since the last log line
	total   int           // failures since the back-off began
	logged  bool          // a line was logged since the back-off began
	lastLog time.Time
}

// Fail records a shortage at now and pauses accepting. It returns the line to log, empty
// when one was logged less than a second ago.
func (b *Backoff) Fail(now time.Time, err error) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = min(max(2*b.delay, MinPause), MaxPause)
	b.until = now.Add(b.delay)
	b.fails++
	b.total++
	if !b.lastLog.IsZero() && now.Sub(b.lastLog) < logEvery {
		return ""
	}
	var line string
	if b.total == 1 {
		line = fmt.Sprintf("out of descriptors or memory (%v): pausing accept for %v, doubling up to %v", err, b.delay, MaxPause)
	} else {
		line = fmt.Sprintf("still out of descriptors or memory (%v): %d failures since the last report, pausing accept for %v",
			err, b.fails, b.delay)
	}
	b.lastLog, b.fails, b.logged = now, 0, true
	return line
}

// Pause returns how long accepting stays paused after now (zero or less: not paused).
func (b *Backoff) Pause(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.until.Sub(now)
}

// OK records a connection served. It returns the line to log when that ends a back-off
// that was logged, and "" otherwise.
func (b *Backoff) OK() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total == 0 {
		return ""
	}
	line := ""
	if b.logged {
		line = fmt.Sprintf("serving again after %d failures for lack of descriptors or memory", b.total)
	}
	b.delay, b.until, b.fails, b.total, b.logged = 0, time.Time{}, 0, 0, false
	return line
}
