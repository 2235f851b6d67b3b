package pipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/meter"
	"shd-tcp-tools/internal/patherr"
	"shd-tcp-tools/internal/ratelimit"
	"shd-tcp-tools/internal/regfile"
	"shd-tcp-tools/internal/relay"
)

// DefaultInterval is how often host-file counts are written back while a transfer runs.
const DefaultInterval = 512 * time.Second

// fileChunk is the most bytes one step of a copy between two regular files moves between
// two counts: copy_file_range does not stall, and one step is a few milliseconds.
const fileChunk = 16 << 20

// insertStep is the most --insert bytes one write carries, so that a destination that
// holds writes up hides at most that much from the count.
const insertStep = 64 << 10

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
	Local       netip.Addr    // INADDR_DEFAULT, resolved (zero: none); -b overrides it
	DialTimeout time.Duration // per connection attempt; zero means endpoint.DefaultDialTimeout
	// CloseTimeout is how long a socket destination may acknowledge nothing more, once
	// every byte is written, before delivery is given up as unconfirmed; zero means
	// relay.SettleTimeout.
	CloseTimeout time.Duration

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

func (c *Config) closeTimeout() time.Duration {
	if c.CloseTimeout > 0 {
		return c.CloseTimeout
	}
	return relay.SettleTimeout
}

func (c *Config) tool() string {
	if c.Tool != "" {
		return c.Tool
	}
	return "tcppipe"
}

// CutShortError reports a transfer that ended before its source did, or whose delivery
// could not be confirmed.
type CutShortError struct {
	// Bytes went through: written to a file, or acknowledged by a socket's peer.
	Bytes int64
	// Sent, when more than Bytes, is what was written to a socket whose peer did not
	// acknowledge it all.
	Sent int64
	Err  error // what happened, in words, naming the end that failed
}

func (e *CutShortError) Error() string {
	size := meter.Size(uint64(max(e.Bytes, 0)))
	if e.Sent > e.Bytes {
		return fmt.Sprintf("%v: %d of %d bytes acknowledged (%s)", e.Err, e.Bytes, e.Sent, size)
	}
	return fmt.Sprintf("%v after %d bytes (%s)", e.Err, e.Bytes, size)
}

func (e *CutShortError) Unwrap() error { return e.Err }

// errInterrupted is the cause of a transfer that a signal ended.
var errInterrupted = errors.New("interrupted by signal")

// accounts are the host-file entries that the bytes of this transfer are added to.
type accounts struct {
	mu      sync.Mutex
	entries []account
	added   int64 // the bytes added to every entry so far
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

// flush brings every entry up to total bytes, the transfer's count so far, and writes the
// counts back.
func (a *accounts) flush(total int64) error {
	a.mu.Lock()
	if total > a.added {
		for _, e := range a.entries {
			e.ledger.Add(e.name, uint64(total-a.added))
		}
		a.added = total
	}
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
	if !cfg.Source.Network() && !cfg.Destination.Network() && sameFile(cfg.Stdin, cfg.Stdout) {
		return errors.New("input file is output file: stdin and stdout are the same regular file")
	}
	var insert *os.File // streamed, not read first: it may be larger than memory
	if cfg.InsertFile != "" {
		if insert, err = openInsert(ctx, cfg.InsertFile); err != nil {
			if ctx.Err() != nil { // a FIFO that no process wrote
				return &CutShortError{Err: fmt.Errorf("%w while waiting for a writer of the insert file %s (a FIFO)", errInterrupted, cfg.InsertFile)}
			}
			return err
		}
		defer insert.Close()
	}
	var acct accounts
	local := cfg.Local
	if cfg.BindFile != "" {
		least, ledger, err := leastOf(cfg.BindFile, bindWhat, warn)
		if err != nil {
			return err
		}
		e := least[0]
		ip, err := endpoint.ResolveIP(ctx, e.Host)
		if err != nil {
			return patherr.Wrap(bindWhat, cfg.BindFile, fmt.Errorf("local address %s: %w", e.Name, err))
		}
		local = ip
		acct.add(ledger, e.Name)
	}
	var candidates []hostfile.Entry
	var netLedger *hostfile.Ledger
	if cfg.NetworkFile != "" {
		if candidates, netLedger, err = leastOf(cfg.NetworkFile, networkWhat, warn); err != nil {
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
			for k, f := range failures { // each was followed by eps[k+1]
				warn("%v; trying the next host, %s", f.Err, eps[k+1])
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
	t := &transfer{srcName: "stdin", dstName: "stdout"}
	t.final.Store(-1)
	if cfg.Source.Network() {
		if t.srcConn, err = open(cfg.Source); err != nil {
			return err
		}
		src, t.srcName = t.srcConn, "SOURCE "+t.srcConn.RemoteAddr().String()
	}
	if cfg.Destination.Network() {
		if t.dstConn, err = open(cfg.Destination); err != nil {
			return err
		}
		dst, t.dstName = t.dstConn, "DESTINATION "+t.dstConn.RemoteAddr().String()
	}
	// A socket is closed cleanly only after an acknowledged end; any other end resets it,
	// so that the peer never takes a partial transfer for a complete one.
	defer t.closeSockets()

	// Write counts back every interval while the transfer runs, and once at the end.
	flushDone := make(chan struct{})
	stopFlush := make(chan struct{})
	go func() {
		defer close(flushDone)
		tk := time.NewTicker(cfg.interval())
		defer tk.Stop()
		for {
			select {
			case <-stopFlush:
				return
			case <-tk.C:
				if err := acct.flush(t.delivered()); err != nil {
					warn("%v", err)
				}
			}
		}
	}()
	defer func() {
		close(stopFlush)
		<-flushDone
		if ferr := acct.flush(t.delivered()); ferr != nil && err == nil {
			err = ferr
		}
	}()

	if cfg.Progress {
		t.prog = &meter.Progress{Out: cfg.Stderr, Terminal: cfg.Terminal, Prefix: cfg.tool() + ":"}
		pctx, stop := context.WithCancel(ctx)
		reported := make(chan struct{})
		go func() {
			defer close(reported)
			t.prog.Run(pctx)
		}()
		// The summary is the last line: wait for the reporter before printing it.
		defer func() { stop(); <-reported; t.prog.Finish() }()
	}

	copied := make(chan error, 1)
	go func() { copied <- t.copy(ctx, dst, src, insert, cfg.Rate) }()
	select {
	case err = <-copied:
	case <-ctx.Done():
		// A signal ends the transfer: deadlines in the past wake a copy waiting on a
		// socket, and a wait for stdout sees ctx. A read from stdin cannot be woken; the
		// process exits without it.
		t.stopSockets()
		tm := time.NewTimer(time.Second)
		defer tm.Stop()
		select {
		case <-copied:
		case <-tm.C:
		}
		return t.cut(errInterrupted)
	}
	if err != nil {
		return t.cut(t.cause(ctx, err))
	}
	if t.dstConn != nil {
		// Every byte is written: send FIN, and wait until the peer has acknowledged it
		// all before closing, reading and dropping what it sends meanwhile.
		if err := t.dstConn.CloseWrite(); err != nil {
			return t.cut(t.cause(ctx, err))
		}
		t.finSent.Store(true)
		left := relay.Settle(ctx, t.dstConn, cfg.closeTimeout())
		switch {
		case ctx.Err() != nil:
			return t.cut(errInterrupted)
		case left > 0 && relay.ConnReset(t.dstConn) && relay.ConnUnacked(t.dstConn) > 0:
			// Only with bytes unacknowledged, counted after the state: a peer that
			// acknowledged everything and closed leaves our socket in TCP_CLOSE too
			// (TIME_WAIT, or straight from LAST_ACK when it closed first), which is no reset.
			return t.cut(resetError(t.dstName))
		case left > 0:
			cut := t.cut(fmt.Errorf("delivery not confirmed: %s acknowledged nothing more for %v", t.dstName, cfg.closeTimeout()))
			cut.Sent = t.moved.Load()
			return cut
		}
	}
	t.final.Store(t.moved.Load())
	t.clean = true
	return nil
}

// transfer is the state of one Run once its ends are open.
type transfer struct {
	srcConn, dstConn *net.TCPConn // the socket end, if any (nil for stdio)
	srcName, dstName string       // the ends in words, for messages
	prog             *meter.Progress

	moved   atomic.Int64 // bytes written to the destination
	finSent atomic.Bool  // the destination socket has its FIN queued
	final   atomic.Int64 // the bytes that went through, once known; -1 before
	clean   bool         // the run ended with every byte acknowledged
}

// progress counts n more bytes written to the destination.
func (t *transfer) progress(n int64) {
	t.moved.Add(n)
	if t.prog != nil {
		t.prog.Add(n)
	}
}

// delivered returns the bytes that went through so far: those written to a file, or, for
// a socket, acknowledged by its peer.
func (t *transfer) delivered() int64 {
	if n := t.final.Load(); n >= 0 {
		return n
	}
	n := t.moved.Load()
	if t.dstConn != nil {
		u := int64(relay.ConnUnacked(t.dstConn))
		if t.finSent.Load() && u > 0 {
			u-- // the FIN
		}
		n -= max(u, 0)
	}
	return max(n, 0)
}

// The words for Config's files in Run's errors about them ("insert file PATH: reason", an
// *fs.PathError as patherr.Wrap makes it), which cmd/tcppipe names by its flags.
const (
	insertWhat  = "insert file"
	bindWhat    = "bind file"
	networkWhat = "network file"
)

// openInsert opens the --insert file, so that a missing or unreadable one, or a
// directory, is an error before any socket. A FIFO is waited for (its writer's first
// bytes, or its close) until ctx ends, and its reads end with ctx too.
func openInsert(ctx context.Context, path string) (*os.File, error) {
	f, err := regfile.OpenStream(ctx, path)
	if err != nil {
		return nil, patherr.Wrap(insertWhat, path, err)
	}
	return f, nil
}

// copy writes insert, when not nil, and then the source to the destination, paying
// insert's bytes from the same rate bucket as the copy's. insert is read a step at a time
// as it is sent.
func (t *transfer) copy(ctx context.Context, dst io.Writer, src io.Reader, insert *os.File, rate int64) error {
	bucket := ratelimit.NewBucket(rate)
	if insert != nil {
		buf := make([]byte, insertStep)
		for {
			k, err := bucket.Wait(ctx, insertStep)
			if err != nil {
				return err
			}
			k, rerr := insert.Read(buf[:k])
			n, err := dst.Write(buf[:k])
			bucket.Used(n)
			t.progress(int64(n))
			if err != nil {
				return &relay.WriteError{Err: err}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return patherr.Wrap("reading "+insertWhat, insert.Name(), rerr)
			}
		}
	}
	// Where relay.Copy does not count every system call itself, and the standard library
	// copies through a buffer anyway, count every write as it happens.
	copyDst, perWrite := dst, !relay.Exact(dst, src) && !bothRegular(dst, src)
	if perWrite {
		copyDst = countingWriter{dst, t.progress}
	}
	_, err := relay.Copy(ctx, copyDst, src, relay.CopyOptions{
		Bucket: bucket,
		Progress: func(n int64) {
			if !perWrite {
				t.progress(n)
			}
		},
		Tick:  time.Second,
		Chunk: fileChunk,
	})
	return err
}

// stopSockets wakes a copy waiting on a socket end.
func (t *transfer) stopSockets() {
	past := time.Unix(1, 0)
	for _, c := range []*net.TCPConn{t.srcConn, t.dstConn} {
		if c != nil {
			_ = c.SetDeadline(past)
		}
	}
}

// cut fixes the count at what went through and describes the end as cut short.
func (t *transfer) cut(cause error) *CutShortError {
	if t.dstConn != nil {
		// What the peer's kernel has but has not acknowledged yet is delivered too.
		relay.AwaitInFlight(t.dstConn, time.Second)
	}
	n := t.delivered()
	t.final.Store(n)
	return &CutShortError{Bytes: n, Err: cause}
}

// closeSockets closes the socket ends: cleanly after an acknowledged end, with a reset
// (SO_LINGER 0) otherwise.
func (t *transfer) closeSockets() {
	for _, c := range []*net.TCPConn{t.srcConn, t.dstConn} {
		if c == nil {
			continue
		}
		if !t.clean {
			_ = c.SetLinger(0)
		}
		_ = c.Close()
	}
}

// cause says in words what ended the transfer early and at which end.
func (t *transfer) cause(ctx context.Context, err error) error {
	var we *relay.WriteError
	switch {
	case ctx.Err() != nil:
		return errInterrupted
	case t.srcConn != nil && relay.ConnReset(t.srcConn):
		return resetError(t.srcName)
	case t.dstConn != nil && relay.ConnReset(t.dstConn):
		return resetError(t.dstName)
	case errors.As(err, &we):
		return fmt.Errorf("writing to %s: %w", t.dstName, sysErr(we.Err))
	}
	return fmt.Errorf("reading from %s: %w", t.srcName, sysErr(err))
}

// resetError is an end whose peer reset the connection; it matches syscall.ECONNRESET.
type resetError string

func (e resetError) Error() string        { return string(e) + " reset by peer" }
func (e resetError) Is(target error) bool { return target == syscall.ECONNRESET }

// sysErr returns the system's error number inside err, whose text says what happened
// without the layers of operation names and addresses the caller words itself.
func sysErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// bothRegular reports whether dst and src are regular files (copy_file_range).
func bothRegular(dst io.Writer, src io.Reader) bool {
	d, ok1 := dst.(*os.File)
	s, ok2 := src.(*os.File)
	return ok1 && ok2 && isRegular(d) && isRegular(s)
}

// sameFile reports whether stdin and stdout are one regular file and stdin is not at its
// end: copying would then read what it writes, without end ("- - < f >> f"). It is cat's
// "input file is output file" rule.
func sameFile(in, out *os.File) bool {
	if in == nil || out == nil {
		return false
	}
	a, err1 := in.Stat()
	b, err2 := out.Stat()
	if err1 != nil || err2 != nil || !a.Mode().IsRegular() || !os.SameFile(a, b) {
		return false
	}
	pos, err := in.Seek(0, io.SeekCurrent)
	return err != nil || pos < a.Size()
}

func isRegular(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// countingWriter counts every write as it completes. It hides the destination's
// ReadFrom, so it is only used where the copy goes through a buffer anyway: there it
// costs nothing, and it lets -p report a slow pipe every second and a signal count the
// bytes of an unfinished chunk. Its write errors are *relay.WriteError.
type countingWriter struct {
	w     io.Writer
	count func(int64)
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.count(int64(n))
	if err != nil {
		return n, &relay.WriteError{Err: err}
	}
	return n, nil
}

func cmp(port, fallback int) int {
	if port != 0 {
		return port
	}
	return fallback
}

// leastOf reads a host file and returns its usable entries, fewest bytes first, with a
// ledger for adding counts to it. Its errors name the file as what PATH.
func leastOf(path, what string, warn func(string, ...any)) ([]hostfile.Entry, *hostfile.Ledger, error) {
	f, warnings, err := hostfile.Read(path)
	if err != nil {
		// "network file hosts: no such file or directory", like the insert file's message.
		return nil, nil, patherr.Wrap(what, path, err)
	}
	for _, w := range warnings {
		warn("warning: %v", w)
	}
	least := f.Least()
	if len(least) == 0 {
		return nil, nil, patherr.Wrap(what, path, errors.New("no usable host entry"))
	}
	return least, hostfile.NewLedger(path), nil
}

// acceptOne listens on ep, accepts a single connection, closes the listener, and waits
// cfg.Wait before handing the connection over.
func acceptOne(ctx context.Context, ep endpoint.Endpoint, local netip.Addr, cfg Config) (*net.TCPConn, error) {
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
