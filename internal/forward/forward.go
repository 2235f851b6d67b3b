// Package forward is the tcp-pf engine: it accepts TCP connections, turns away clients that
// are not on the allow list, connects every other one to a destination (one fixed address, or
// the host-file entry with the fewest bytes, with failover to the next) and relays both
// directions until the connection ends, keeping the host file's counts up to date.
package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"shd-tcp-tools/internal/accept"
	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/dnscache"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/health"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/meter"
)

// Defaults for the Config fields whose zero value means "the default".
const (
	DefaultInterval       = 512 * time.Second // host-file write-back (-i)
	DefaultConnectTimeout = 10 * time.Second  // one connection attempt (--connect-timeout)
	DefaultGrace          = 5 * time.Second   // open connections may finish after a stop (--grace)
	DefaultKeepAlive      = 15 * time.Second  // TCP keepalive period on both sides
	DefaultHeaderTimeout  = 5 * time.Second   // a client's PROXY header (--accept-proxy-timeout)
	// LowNoFile is the open-file limit under which Serve warns at start.
	LowNoFile = 4096
)

// SpareProcs is how many Ps beyond its Loops tcp-pf runs with (GOMAXPROCS, which
// cmd/tcp-pf sets): with one more P than loops, Go's sysmon does not hand a waiting
// loop's P to another thread every round (about 8% less CPU per connection).
const SpareProcs = 1

// Config is what a Server does. Zero durations mean the defaults above; Dest, HostFile or
// Store must be set.
type Config struct {
	// Dest is the single destination (-d). Ignored when HostFile or Store is set.
	Dest endpoint.Endpoint
	// HostFile (-l) is the host file to balance over: each connection goes to the entry
	// with the fewest bytes. Port (-p) is the port of entries that name none; with zero,
	// every entry must name its own (New returns a *NoPortError otherwise).
	HostFile string
	Port     int
	// Store, when set, is where the counts to balance over live, in place of HostFile's
	// file (hostfile.NewStore(HostFile)): another implementation of Store, such as one
	// shared by several machines, changes nothing else.
	Store Store
	// Interval (-i) is how often the counts are written back to the store.
	Interval time.Duration

	// Allow is the client allow list (-a); nil or empty allows every client.
	Allow *allow.List
	// Rate (-r) caps each direction of each connection, in bytes per second; 0 is unlimited.
	Rate int64
	// Insert (--insert) is sent to the destination before any byte of the client.
	Insert []byte
	// Lazy (--lazy) passes a half-close on instead of closing both connections.
	Lazy bool
	// SendProxy (--send-proxy, --send-proxy-v2) is the version of the PROXY protocol
	// header that goes to the destination before anything else (Insert included), naming
	// the client and the address it connected to; 0 sends none. The header is not counted
	// in the byte counts, nor paced by Rate.
	SendProxy int
	// AcceptProxy (--accept-proxy) reads a PROXY protocol header, version 1 or 2, from every
	// client before anything else: the addresses it names are the client and the address
	// it connected to from then on (in the log, for Allow, in what SendProxy sends). A
	// client whose header is malformed, or does not come within AcceptProxyTimeout
	// (default DefaultHeaderTimeout), is refused and logged.
	AcceptProxy        bool
	AcceptProxyTimeout time.Duration
	// ConnectTimeout bounds each connection attempt to a destination.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection when neither direction moved a byte for this long;
	// zero means never.
	IdleTimeout time.Duration
	// Grace is how long open connections may go on after the stop; negative cuts them at
	// once.
	Grace time.Duration
	// Hurry, when closed, ends the grace period at once: the open connections are cut
	// then (tcp-pf: a second SIGINT or SIGTERM). Nil never ends it.
	Hurry <-chan struct{}
	// KeepAlive is the TCP keepalive period of outgoing connections (accepted ones get it
	// from their listener); negative disables it.
	KeepAlive time.Duration
	// Local (INADDR_DEFAULT) is the local address of outgoing connections, with its zone
	// for a link-local IPv6 address; the zero Addr is any.
	Local netip.Addr

	// Loops is how many event loops, each on its own thread, serve the connections; zero
	// means GOMAXPROCS.
	Loops int

	// Log receives the event lines; nil discards them.
	Log *connlog.Logger
	// Now is the clock for accept back-off logging; nil is time.Now.
	Now func() time.Time
}

func (c *Config) loops() int {
	if c.Loops > 0 {
		return c.Loops
	}
	return runtime.GOMAXPROCS(0)
}

func (c *Config) interval() time.Duration { return orDefault(c.Interval, DefaultInterval) }
func (c *Config) grace() time.Duration    { return orDefault(c.Grace, DefaultGrace) }
func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// floodBurst and floodInterval bound the lines of one kind of refusal or failure (refused
// clients; failed connections to one destination): the first floodBurst of each
// floodInterval get their own line, the others are counted in one summary line.
const (
	floodBurst    = 10
	floodInterval = 10 * time.Second
)

// Server relays the connections of one listener. Create it with New.
type Server struct {
	cfg  Config
	log  *connlog.Logger
	bal  *balancer // nil with a single destination
	keep *keeper   // writes and rereads the host file; nil with a single destination
	back accept.Backoff
	// source gives connections their hosts to try: the one destination, or the balancer.
	source endpoint.Source[*hostEntry]
	names  *dnscache.Cache
	health *health.Tracker // nil with a single destination
	// floods keeps refusals and failures from flooding the log: floodBurst lines of a kind
	// per floodInterval, then a summary line with the count of the others.
	floods *connlog.Summary
	// socket creates the outgoing sockets; nil is sock.Socket (a test seam for shortages).
	socket func(netip.Addr) (int, error)
	// noPipes makes every splice find no pipe, as when descriptors run out (a test seam).
	noPipes bool
	// spliced counts the relayed bytes that moved by splice, never entering user space
	// (relay.Result.Spliced of every connection closed): what the zero-copy tests read.
	spliced atomic.Int64
	// failedWrites counts the host-file write-backs that failed, which the log names once
	// an episode (what the tests read).
	failedWrites atomic.Int64
	// rounds counts the keeper's rounds at the interval, written or not (what the tests
	// wait on).
	rounds atomic.Int64
	// partialHeader, when set, is called on the loop each time a client's PROXY header is
	// found incomplete (a test seam).
	partialHeader func()

	// counts are the loops' counts, one Counters each (Stats adds them up).
	counts []connstats.Counters

	ids  atomic.Uint64
	open atomic.Int64
	wg   sync.WaitGroup
}

// New checks cfg and, for a host file, reads it. The error names what is wrong: no
// destination, a host file that cannot be read or has no usable entry. The warnings, even
// with an error, name the host file's malformed lines ("hosts:3: malformed entry: ...").
func New(cfg Config) (*Server, []error, error) {
	s := &Server{cfg: cfg, log: cfg.Log, floods: cfg.Log.Summarise(floodBurst, floodInterval),
		counts: make([]connstats.Counters, cfg.loops())}
	if cfg.SendProxy != 0 && cfg.SendProxy != 1 && cfg.SendProxy != 2 {
		return nil, nil, fmt.Errorf("PROXY protocol version %d: want 1 or 2", cfg.SendProxy)
	}
	if cfg.Store == nil && cfg.HostFile != "" {
		cfg.Store = hostfile.NewStore(cfg.HostFile)
		s.cfg.Store = cfg.Store
	}
	switch {
	case cfg.Store != nil:
		b, warn, err := newBalancer(cfg.Store, cfg.Port)
		if err != nil {
			return nil, warn, err
		}
		s.bal = b
		s.keep = newKeeper(s, warn)
		s.newHosts()
		return s, warn, nil
	case cfg.Dest.Host == "" || cfg.Dest.Port == 0:
		return nil, nil, errors.New("no destination: give a HOST:PORT or a host file")
	}
	s.newHosts()
	return s, nil, nil
}

// Stats returns the counts of the connections served so far, added up over the loops:
// accepted, opened, ended, refused, failed, and the bytes relayed each way up to the last
// splice. Safe to call at any time, from any goroutine; it takes no lock.
func (s *Server) Stats() connstats.Snapshot {
	var sn connstats.Snapshot
	for i := range s.counts {
		sn.Add(&s.counts[i])
	}
	return sn
}

// Hosts returns the host file's entries (the store's), in order, with their counts, open
// connections and health; nil with a single destination. It holds the balancer's lock for
// one pass over the entries.
func (s *Server) Hosts() []HostStats {
	if s.bal == nil {
		return nil
	}
	return s.bal.stats()
}

// loopCounts returns the counts of loop i.
func (s *Server) loopCounts(i int) *connstats.Counters { return &s.counts[i%len(s.counts)] }

// Open returns how many connections are being set up or relayed right now.
func (s *Server) Open() int { return int(s.open.Load()) }

// Serve accepts connections on ln and relays each until ctx is cancelled. Then it closes ln,
// lets open connections finish for the grace period, cuts those still open, writes the
// host-file counts and returns nil; or, when that last write fails (another process held
// the file's lock for ExitLockWait), an *UnwrittenError with the counts. It also returns when
// accepting fails for a reason other than a shortage of descriptors or memory, which it
// rides out by backing off.
func (s *Server) Serve(ctx context.Context, ln *net.TCPListener) error {
	s.log.Printf("listening on %s, forwarding to %s", ln.Addr(), s.destName())
	if n, err := NoFileLimit(); err == nil && n < LowNoFile {
		s.log.Warnf("warning: open file limit (ulimit -n) is %d; each connection needs 2 descriptors, and 4 more while bytes move (splice pipes): raise it to serve many connections", n)
	}

	stopKeeper := s.keep.start()
	warnCtx, stopWarn := context.WithCancel(ctx)
	warned := s.warnUnresolved(warnCtx)
	defer func() { stopWarn(); warned() }()
	defer s.health.Close()
	defer s.floods.Flush() // the last interval's counts, once the loops have ended
	// Connections are state machines on one event loop per CPU (see loop_linux.go).
	cut, stopLoops, acceptErr := s.serveLoops(ctx, ln)
	if stopLoops == nil { // the loops did not start: nothing to cut or stop
		cut, stopLoops = func() {}, func() {}
	}
	defer stopLoops()
	_ = ln.Close()

	switch n := s.Open(); n {
	case 0: // a line all the same: a log that just ends reads as a crash
		s.log.Printf("stopping: no connections open")
	case 1:
		s.log.Printf("stopping: 1 connection open, letting it finish for %v", max(s.cfg.grace(), 0))
	default:
		s.log.Printf("stopping: %d connections open, letting them finish for %v", n, max(s.cfg.grace(), 0))
	}
	if !s.waitOpen(s.cfg.grace()) {
		s.log.Printf("cutting %s", meter.Count(s.Open(), "connection"))
		cut()
		s.wg.Wait()
	}
	stopKeeper()
	writeErr := s.keep.final()
	if acceptErr != nil {
		return errors.Join(acceptErr, writeErr)
	}
	return writeErr
}

// Reload rereads the host file (the store) now, as a change of it does, and returns at
// once; the counts not yet written are kept. tcp-pf calls it on SIGHUP. It does nothing
// with a single destination.
func (s *Server) Reload() { s.keep.reload() }

// waitOpen waits up to d for every connection to end and reports whether they did.
func (s *Server) waitOpen(d time.Duration) bool {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	if d <= 0 {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	case <-s.cfg.Hurry:
		s.log.Printf("ending the grace period at once")
		return false
	}
}

func (s *Server) destName() string {
	if s.bal != nil && s.cfg.Port == 0 {
		return fmt.Sprintf("the least used host of %s (each entry names its port)", s.bal.store)
	}
	if s.bal != nil {
		return fmt.Sprintf("the least used host of %s (port %d)", s.bal.store, s.cfg.Port)
	}
	return s.cfg.Dest.String()
}

// done ends the connection's life in the server.
func (s *Server) done() {
	s.open.Add(-1)
	s.wg.Done()
}
