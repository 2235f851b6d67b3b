package forward

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/connlog"
)

// Accept back-off, as net/http does it: each shortage pauses accepting for 5 ms, doubling
// up to 1 s.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
	// backoffLogEvery is the least time between two back-off log lines.
	backoffLogEvery = time.Second
)

// backoff pauses accepting while the process is short of descriptors or memory, whether
// accept itself or a connection to a destination ran into the limit: a connection accepted
// then cannot be served, and leaving it in the kernel's backlog lets it wait for one that
// can. However often it fails, and however often it recovers, it logs at most one line per
// backoffLogEvery, plus one when serving resumes. Safe for simultaneous use.
type backoff struct {
	mu      sync.Mutex
	delay   time.Duration // the last pause; zero when not backing off
	until   time.Time     // accepting is paused until then
	fails   int           // failures since the last log line
	total   int           // failures since the back-off began
	logged  bool          // a line was logged since the back-off began
	lastLog time.Time
}

// fail records a shortage at now and pauses accepting. It returns the line to log, empty
// when one was logged less than backoffLogEvery ago.
func (b *backoff) fail(now time.Time, err error) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = min(max(2*b.delay, minBackoff), maxBackoff)
	b.until = now.Add(b.delay)
	b.fails++
	b.total++
	if !b.lastLog.IsZero() && now.Sub(b.lastLog) < backoffLogEvery {
		return ""
	}
	var line string
	if b.total == 1 {
		line = fmt.Sprintf("out of descriptors or memory (%v): pausing accept for %v, doubling up to %v", err, b.delay, maxBackoff)
	} else {
		line = fmt.Sprintf("still out of descriptors or memory (%v): %d failures since the last report, pausing accept for %v",
			err, b.fails, b.delay)
	}
	b.lastLog, b.fails, b.logged = now, 0, true
	return line
}

// pause returns how long accepting stays paused after now.
func (b *backoff) pause(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.until.Sub(now)
}

// ok records a connection served. It returns the line to log when that ends a back-off
// that was logged.
func (b *backoff) ok() string {
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

// shortage reports whether an error is a shortage that passes once other connections end:
// out of descriptors (EMFILE, ENFILE) or of kernel memory (ENOBUFS, ENOMEM).
func shortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// shorted records a shortage in the back-off and logs it on log when due.
func (s *Server) shorted(log *connlog.Logger, err error) {
	if line := s.back.fail(s.cfg.now(), err); line != "" {
		log.Printf("%s", line)
	}
}

// NoFileLimit returns the soft limit on open files (ulimit -n) of this process. Go raises it
// to the hard limit at start, so it is the most descriptors the process can have.
func NoFileLimit() (uint64, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("reading the open file limit: %w", err)
	}
	return r.Cur, nil
}
