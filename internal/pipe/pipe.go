package pipe

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/meter"
	"shd-tcp-tools/internal/ratelimit"
	"shd-tcp-tools/internal/relay"
)

// DefaultInterval is how often host-file counts are written back while a transfer runs.
const DefaultInterval = 512 * time.Second

// copyChunk is the most bytes one step of an unlimited copy to a socket or a regular file
// moves between two counts (a limited copy moves one burst). Each step is a sendfile or
// splice call of its own plus some bookkeeping: at loopback speeds, 1 MiB steps cost about
// a tenth more CPU than one long copy, 16 MiB steps nothing measurable, and a fast
// transfer is still counted many times a second. A slow socket source is cut every second
// by relay.Copy's Tick, and a file source is followed by its position (followPosition).
// To a pipe or a terminal, which may be read slowly and whose writes nothing can cut
// short, steps stay at relay.DefaultChunk, so that a stalled step hides less from -p and
// from the count a signal reports. Other devices (/dev/null) never hold a write up.
const copyChunk = 16 << 20

// chunkFor returns the step size for an unlimited copy to dst (see copyChunk).
func chunkFor(dst io.Writer) int64 {
	switch d := dst.(type) {
	case *net.TCPConn:
		return copyChunk
	case *os.File:
		if !mayStall(d) {
			return copyChunk
		}
	}
	return relay.DefaultChunk
}

// Config is a validated tcppipe invocation. Main builds it from flags; tests build it directly.
type Config struct {
	Source, Destination End

	BindFile    string        // -b: pick the local address from this host file
	NetworkFile string        // -n: pick the host for "." from this host file
	Interval    time.Duration // -i: host-file write-back interval; zero means DefaultInterval
	InsertFile  string        // --insert: sent to the destination before any source byte
	Rate        int64         // -l: bytes per second, zero for unlimited
	Progress    bool          // -p: throughput reports on Stderr
	Wait        time.Duration // -w: pause after accepting a connection, before using it
	Local       net.IP        // INADDR_DEFAULT, resolved; -b overrides it
	DialTimeout time.Duration // per connection attempt; zero means endpoint.DefaultDialTimeout

	Stdin  *os.File
	Stdout *os.File
	Stderr io.Writer
	// Terminal makes progress reports update one line in place.
	Terminal bool
	// Tool prefixes warnings and reports; "tcppipe" when empty.
	Tool string
	// Ready, when set, is called with the listening address once a ":PORT" end listens.
	Ready func(net.Addr)
}

func (c *Config) interval() time.Duration {
	if c.Interval > 0 {
		return c.Interval
	}
	return DefaultInterval
}

func (c *Config) tool() string {
	if c.Tool != "" {
		return c.Tool
	}
	return "tcppipe"
}

// CutShortError reports a transfer that ended before its source did.
type CutShortError struct {
	Bytes int64 // bytes delivered to the destination
	Err   error
}

func (e *CutShortError) Error() string {
	return fmt.Sprintf("transfer cut short after %d bytes (%s): %v", e.Bytes, meter.Size(uint64(max(e.Bytes, 0))), e.Err)
}

func (e *CutShortError) Unwrap() error { return e.Err }

// accounts are the host-file entries that the bytes of this transfer are added to.
type accounts struct {
	mu      sync.Mutex
	entries []account
}

type account struct {
	ledger *hostfile.Ledger
	name   string
}

func (a *accounts) add(l *hostfile.Ledger, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, account{l, name})
}

func (a *accounts) count(n int64) {
	if n <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.entries {
		e.ledger.Add(e.name, uint64(n))
	}
}

func (a *accounts) flush() error {
	a.mu.Lock()
	entries := append([]account(nil), a.entries...)
	a.mu.Unlock()
	var errs []error
	for _, e := range entries {
		if _, err := e.ledger.Flush(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run performs the transfer. Every file it needs is read before any socket opens. It
// returns a *CutShortError when the transfer ends early, including on cancellation of ctx
// (SIGINT/SIGTERM); host-file counts are written back in every case.
func Run(ctx context.Context, cfg Config) (err error) {
	warn := func(format string, args ...any) {
		fmt.Fprintf(cfg.Stderr, "%s: "+format+"\n", append([]any{cfg.tool()}, args...)...)
	}
	var insert []byte
	if cfg.InsertFile != "" {
		if insert, err = os.ReadFile(cfg.InsertFile); err != nil {
			return fmt.Errorf("--insert %s: %w", cfg.InsertFile, pathErr(err))
		}
	}
	var acct accounts
	local := cfg.Local
	if cfg.BindFile != "" {
		least, ledger, err := leastOf(cfg.BindFile, "-b", warn)
		if err != nil {
			return err
		}
		e := least[0]
		ip, err := endpoint.ResolveIP(ctx, e.Host)
		if err != nil {
			return fmt.Errorf("-b %s: local address %s: %w", cfg.BindFile, e.Name, err)
		}
		local = ip
		acct.add(ledger, e.Name)
	}
	var candidates []hostfile.Entry
	var netLedger *hostfile.Ledger
	if cfg.NetworkFile != "" {
		if candidates, netLedger, err = leastOf(cfg.NetworkFile, "-n", warn); err != nil {
			return err
		}
	}

	dialer := endpoint.Dialer{Local: local, Timeout: cfg.DialTimeout}
	open := func(e End) (c *net.TCPConn, err error) {
		defer func() {
			if err != nil && e.Kind == Connect && ctx.Err() != nil {
				err = errors.New("interrupted by signal while connecting")
			}
		}()
		switch {
		case e.Kind == Listen:
			return acceptOne(ctx, e.Endpoint, local, cfg)
		case e.Least:
			eps := make([]endpoint.Endpoint, len(candidates))
			for i, c := range candidates {
				eps[i] = endpoint.Endpoint{Host: c.Host, Port: cmp(c.Port, e.Endpoint.Port)}
			}
			conn, i, failures, err := dialer.DialFirst(ctx, eps)
			if conn == nil && len(failures) > 0 {
				failures = failures[:len(failures)-1] // the returned error names the last one
			}
			for _, f := range failures {
				warn("%v", f.Err)
			}
			if err != nil {
				return nil, err
			}
			acct.add(netLedger, candidates[i].Name)
			return conn, nil
		default:
			return dialer.Dial(ctx, e.Endpoint)
		}
	}

	var src io.Reader = cfg.Stdin
	var dst io.Writer = cfg.Stdout
	var srcConn, dstConn *net.TCPConn
	if cfg.Source.Network() {
		if srcConn, err = open(cfg.Source); err != nil {
			return err
		}
		defer srcConn.Close()
		src = srcConn
	}
	if cfg.Destination.Network() {
		if dstConn, err = open(cfg.Destination); err != nil {
			return err
		}
		defer dstConn.Close()
		dst = dstConn
	}

	// Write counts back every interval while the transfer runs, and once at the end.
	flushDone := make(chan struct{})
	stopFlush := make(chan struct{})
	go func() {
		defer close(flushDone)
		t := time.NewTicker(cfg.interval())
		defer t.Stop()
		for {
			select {
			case <-stopFlush:
				return
			case <-t.C:
				if err := acct.flush(); err != nil {
					warn("%v", err)
				}
			}
		}
	}()
	defer func() {
		close(stopFlush)
		<-flushDone
		if ferr := acct.flush(); ferr != nil && err == nil {
			err = ferr
		}
	}()

	var prog *meter.Progress
	if cfg.Progress {
		prog = &meter.Progress{Out: cfg.Stderr, Terminal: cfg.Terminal, Prefix: cfg.tool() + ":"}
		pctx, stop := context.WithCancel(ctx)
		reported := make(chan struct{})
		go func() {
			defer close(reported)
			prog.Run(pctx)
		}()
		// The summary is the last line: wait for the reporter before printing it.
		defer func() { stop(); <-reported; prog.Finish() }()
	}
	var moved atomic.Int64
	var shown shownCount
	count := func(n int64) {
		total := moved.Add(n)
		acct.count(n)
		shown.upTo(prog, total)
	}
	if len(insert) > 0 {
		n, err := dst.Write(insert)
		count(int64(n))
		if err != nil {
			return &CutShortError{Bytes: moved.Load(), Err: fmt.Errorf("writing --insert: %w", err)}
		}
	}
	// Where the kernel cannot move the bytes itself, count every write as it happens:
	// relay.Copy reports whole chunks, and a chunk from a slow pipe can take minutes.
	copyDst, perWrite := dst, userSpaceCopy(src, dst)
	if perWrite {
		copyDst = countingWriter{dst, count}
	}
	if prog != nil && !perWrite {
		// A chunk of a file sent over a slow network can take longer than a second; the
		// file's position moves as sendfile goes, so -p follows that between chunks.
		if f, ok := src.(*os.File); ok && isRegular(f) {
			stop := followPosition(f, moved.Load(), func(total int64) { shown.upTo(prog, total) })
			defer stop()
		}
	}
	limiter := ratelimit.New(cfg.Rate)
	widened := false // touched only on the copying goroutine
	copied := make(chan error, 1)
	go func() {
		_, err := relay.Copy(ctx, copyDst, src, relay.CopyOptions{
			Limiter: limiter,
			Progress: func(n int64) {
				if !widened {
					// The copy has taken its chunk size from the burst: let the bucket
					// grow, so time lost to a busy machine is made up.
					ratelimit.Widen(limiter, cfg.Rate)
					widened = true
				}
				if !perWrite {
					count(n)
				}
			},
			Tick:  time.Second,
			Chunk: chunkFor(dst),
		})
		copied <- err
	}()
	select {
	case err = <-copied:
	case <-ctx.Done():
		// A signal ends the transfer: closing the sockets wakes a copy blocked in the
		// kernel. A read from stdin cannot be woken; the process exits without it.
		for _, c := range []*net.TCPConn{srcConn, dstConn} {
			if c != nil {
				c.Close()
			}
		}
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-copied:
		case <-t.C:
		}
		return &CutShortError{Bytes: moved.Load(), Err: errors.New("interrupted by signal")}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted by signal")
		}
		return &CutShortError{Bytes: moved.Load(), Err: err}
	}
	if dstConn != nil {
		// Every byte is written: send FIN, and close.
		if err := dstConn.CloseWrite(); err != nil {
			return &CutShortError{Bytes: moved.Load(), Err: err}
		}
	}
	return nil
}

// userSpaceCopy reports whether copying src to dst goes through a buffer in this process
// whatever we do. The kernel moves bytes from a socket to any file or socket (splice), from
// a regular file to a socket (sendfile) and between regular files (copy_file_range); not
// from a pipe, a terminal or a socket given as stdin, nor from a file to a pipe.
func userSpaceCopy(src io.Reader, dst io.Writer) bool {
	if _, ok := src.(*net.TCPConn); ok {
		return false
	}
	f, ok := src.(*os.File)
	if !ok || !isRegular(f) {
		return true
	}
	switch d := dst.(type) {
	case *net.TCPConn:
		return false
	case *os.File:
		return !isRegular(d)
	}
	return true
}

// mayStall reports whether writes to f can wait on a reader: a pipe, a socket, a
// terminal, or what cannot be told.
func mayStall(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	m := fi.Mode()
	switch {
	case m.IsRegular():
		return false
	case m&os.ModeCharDevice != 0:
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		return err == nil // a terminal
	}
	return true
}

func isRegular(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// countingWriter counts every write as it completes. It hides the destination's
// ReadFrom, so it is only used where the copy goes through a buffer anyway (see
// userSpaceCopy): there it costs nothing, and it lets -p report a slow pipe every second
// and a signal count the bytes of an unfinished chunk.
type countingWriter struct {
	w     io.Writer
	count func(int64)
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.count(int64(n))
	return n, err
}

// shownCount is what -p has been told so far. Two counts feed it, the bytes of finished
// chunks and a file's position, and it passes on whichever is ahead, once.
type shownCount struct {
	mu sync.Mutex
	n  int64
}

func (s *shownCount) upTo(p *meter.Progress, total int64) {
	if p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if total > s.n {
		p.Add(total - s.n)
		s.n = total
	}
}

// positionPoll is how often followPosition looks at the file's position.
const positionPoll = 250 * time.Millisecond

// followPosition calls report with base plus how far f's position has moved, every
// positionPoll, until the returned stop is called. sendfile and copy_file_range move the
// position as they go, so this sees a chunk's progress before the chunk is done.
func followPosition(f *os.File, base int64, report func(int64)) (stop func()) {
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(positionPoll)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if pos, err := f.Seek(0, io.SeekCurrent); err == nil && pos > start {
					report(base + pos - start)
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

func cmp(port, fallback int) int {
	if port != 0 {
		return port
	}
	return fallback
}

// leastOf reads a host file and returns its usable entries, fewest bytes first, with a
// ledger for adding counts to it.
func leastOf(path, flag string, warn func(string, ...any)) ([]hostfile.Entry, *hostfile.Ledger, error) {
	f, warnings, err := hostfile.Read(path)
	if err != nil {
		// "-n hosts: no such file or directory", like --insert's message.
		if cause := errors.Unwrap(err); cause != nil {
			err = cause
		}
		return nil, nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	for _, w := range warnings {
		warn("warning: %v", w)
	}
	least := f.Least()
	if len(least) == 0 {
		return nil, nil, fmt.Errorf("%s %s: no usable host entry", flag, path)
	}
	return least, hostfile.NewLedger(path), nil
}

// acceptOne listens on ep, accepts a single connection, closes the listener, and waits
// cfg.Wait before handing the connection over.
func acceptOne(ctx context.Context, ep endpoint.Endpoint, local net.IP, cfg Config) (*net.TCPConn, error) {
	ln, err := endpoint.Listen(ctx, ep, local)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	c, err := ln.AcceptTCP()
	if err != nil {
		if ctx.Err() != nil {
			return nil, errors.New("interrupted by signal while waiting for a connection")
		}
		return nil, fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
	}
	if cfg.Wait > 0 {
		t := time.NewTimer(cfg.Wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			c.Close()
			return nil, errors.New("interrupted by signal")
		}
	}
	return c, nil
}

// pathErr drops the *PathError op and path, which the caller's message already names.
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
