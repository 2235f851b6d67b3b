package forward

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"shd-tcp-tools/internal/hostfile"
)

// Timing of the host-file keeper.
const (
	// lockTry is how long one write-back waits for a lock that another process holds,
	// and lockRetry how soon it tries again; rereads go on in between.
	lockTry   = 100 * time.Millisecond
	lockRetry = 250 * time.Millisecond
	// ExitLockWait is how long the write-back at the stop waits for the lock before
	// Serve gives up and returns the counts in an *UnwrittenError.
	ExitLockWait = 3 * time.Second
	// rereadDelay gathers the notices of one change (an editor writes a file in several
	// steps) into one reread.
	rereadDelay = 20 * time.Millisecond
	// namesLogged is how many host names a line about added or removed hosts names.
	namesLogged = 5
)

// keeper is the one goroutine that writes the balancer's counts to the store (every
// Interval, and again soon while another process holds the lock) and rereads it when it
// changes or Reload asks, so that write-backs and rereads never run at once. Nothing it does
// holds anything a loop needs for longer than the publication of a result.
type keeper struct {
	s    *Server
	b    *balancer
	wake chan struct{} // a reread is asked for; buffered

	// Of the keeper's goroutine only (and of final, after it ended):
	lockedSince  time.Time // the start of an episode of a lock held by another process
	failedSince  time.Time // the start of an episode of failed write-backs
	failedErr    string    // the failure as last logged in that episode
	failedWrites int       // write-backs failed in that episode
	warned       string    // the store's warnings as last logged
	readFailed   string    // the last reread error logged
	noPortWarned string    // the entries without a port as last logged
}

func newKeeper(s *Server, startWarnings []error) *keeper {
	return &keeper{s: s, b: s.bal, wake: make(chan struct{}, 1), warned: joinErrors(startWarnings)}
}

// reload asks for a reread, without waiting for it. A nil keeper does nothing.
func (k *keeper) reload() {
	if k == nil {
		return
	}
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// start runs the keeper until the returned function is called, which waits for it to end.
// A nil keeper does nothing.
func (k *keeper) start() (stop func()) {
	if k == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := k.b.store.Watch(ctx, k.reload); err != nil {
		k.s.log.Warnf("warning: not following %s live (%v): it is reread at every write-back, every %s", k.b.store, err, k.s.cfg.interval())
	}
	var wg sync.WaitGroup
	wg.Go(func() { k.run(ctx) })
	return func() { cancel(); wg.Wait() }
}

func (k *keeper) run(ctx context.Context) {
	tick := time.NewTicker(k.s.cfg.interval())
	defer tick.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	reread := time.NewTimer(0)
	<-reread.C
	defer retry.Stop()
	defer reread.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-retry.C:
		case <-k.wake:
			reread.Reset(rereadDelay)
			continue
		case <-reread.C:
			k.reread()
			continue
		}
		if k.writeBack(ctx) {
			retry.Reset(lockRetry)
		}
		k.s.rounds.Add(1)
	}
}

// writeBack writes the pending counts, or rereads the store when there are none, and logs
// what happened. It reports whether another process holds the lock, so that the keeper
// tries again soon; the first time in an episode, and when it ends, is logged.
func (k *keeper) writeBack(ctx context.Context) (locked bool) {
	ctx, cancel := context.WithTimeout(ctx, lockTry)
	defer cancel()
	ch, err := k.b.writeBack(ctx)
	now := k.s.cfg.now()
	switch {
	case errors.Is(err, errNothingToWrite):
		// Not a write, so neither the end of an episode nor a failure of one: a failed
		// write keeps its counts pending.
		k.reread()
		return false
	case errors.Is(err, hostfile.ErrLocked):
		if k.lockedSince.IsZero() {
			k.lockedSince = now
			k.s.log.Warnf("host file %s is locked by another process (%s%s): keeping the counts and trying again every %v",
				k.b.store, k.b.store, hostfile.LockSuffix, lockRetry)
		}
		return true
	case err != nil:
		// One episode, as for a lock: the first failure is logged, and another only when
		// the reason changes, not one line every interval.
		if k.failedSince.IsZero() {
			k.failedSince = now
		}
		k.failedWrites++
		k.s.failedWrites.Add(1)
		if why := err.Error(); why != k.failedErr {
			k.failedErr = why
			k.s.log.Warnf("writing counts to %s: %v (kept for the next write)", k.b.store, err)
		}
		k.lockedSince = time.Time{}
		return false
	case !k.failedSince.IsZero():
		k.s.log.Warnf("wrote counts to %s after %d failed writes over %v", k.b.store, k.failedWrites, now.Sub(k.failedSince).Round(time.Millisecond))
	case !k.lockedSince.IsZero():
		k.s.log.Warnf("wrote counts to %s after it was locked for %v", k.b.store, now.Sub(k.lockedSince).Round(time.Millisecond))
	}
	k.lockedSince, k.failedSince, k.failedErr, k.failedWrites = time.Time{}, time.Time{}, "", 0
	k.logChange(ch)
	return false
}

// reread takes up a change of the store, and logs what it changed.
func (k *keeper) reread() {
	ch, warn, err := k.b.reread()
	if w := joinErrors(warn); w != k.warned {
		k.warned = w
		for _, e := range warn {
			k.s.log.Warnf("warning: %v", e)
		}
	}
	if err != nil {
		if msg := err.Error(); msg != k.readFailed {
			k.readFailed = msg
			k.s.log.Warnf("rereading %s: %v (keeping the hosts as they were)", k.b.store, err)
		}
		return
	}
	k.readFailed = ""
	k.logChange(ch)
}

func (k *keeper) logChange(ch change) {
	if w := joinErrors(ch.noPort); w != k.noPortWarned {
		k.noPortWarned = w
		for _, err := range ch.noPort {
			k.s.log.Warnf("warning: %v; not used", err)
		}
	}
	if len(ch.added) > 0 {
		k.s.log.Printf("host file %s: %s added", k.b.store, someNames(ch.added))
	}
	if len(ch.removed) > 0 {
		k.s.log.Printf("host file %s: %s removed: no new connections (open ones finish)", k.b.store, someNames(ch.removed))
	}
}

// someNames names up to namesLogged hosts, and how many more there are.
func someNames(names []string) string {
	if len(names) <= namesLogged {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:namesLogged], ", "), len(names)-namesLogged)
}

func joinErrors(errs []error) string {
	var sb strings.Builder
	for _, e := range errs {
		sb.WriteString(e.Error())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// final is the write-back at the stop, once every connection has ended: it waits up to
// ExitLockWait for the lock. When the counts cannot be written it returns them in an
// *UnwrittenError, so that nothing is lost. A nil keeper does nothing.
func (k *keeper) final() error {
	if k == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ExitLockWait)
	defer cancel()
	_, err := k.b.writeBack(ctx)
	if errors.Is(err, errNothingToWrite) {
		k.s.log.Printf("counts in %s up to date: nothing more to write", k.b.store)
		err = nil
	} else if err == nil {
		k.s.log.Printf("wrote counts to %s", k.b.store)
	}
	if gone := k.b.pendingCounts(false); len(gone) > 0 {
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(gone)) {
			parts = append(parts, fmt.Sprintf("%s %d", name, gone[name]))
		}
		k.s.log.Warnf("not written to %s, which no longer has these hosts: %s", k.b.store, someNames(parts))
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, hostfile.ErrLocked) {
		err = fmt.Errorf("%w (waited %v)", err, ExitLockWait)
	}
	return &UnwrittenError{Path: k.b.store.String(), Counts: k.b.unwritten(), Err: err}
}

// Count is the bytes moved through one host.
type Count struct {
	Host  string
	Bytes uint64
}

// UnwrittenError is Serve's error when the counts could not be written at the stop: Counts
// are the bytes, by host in file order, that are in no file yet. Commands gives the shell
// lines that add them once the file can be written.
type UnwrittenError struct {
	Path   string
	Counts []Count
	Err    error
}

func (e *UnwrittenError) Error() string {
	return fmt.Sprintf("writing counts to %s: %v; the lines below add them", e.Path, e.Err)
}

func (e *UnwrittenError) Unwrap() error { return e.Err }

// Commands returns one ready-to-run line per count: tcppipe-least --add HOST BYTES FILE,
// each word quoted for a POSIX shell where it needs it.
func (e *UnwrittenError) Commands() []string {
	lines := make([]string, 0, len(e.Counts))
	for _, c := range e.Counts {
		lines = append(lines, "tcppipe-least --add "+shellQuote(c.Host)+" "+strconv.FormatUint(c.Bytes, 10)+" "+shellQuote(e.Path))
	}
	return lines
}

// shellQuote returns s as one word for a POSIX shell: as it is when it has only
// characters no shell treats specially, in single quotes otherwise.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./:@%+,=", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
