package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
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

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/meter"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/tlslink"
)

// DefaultPool is how many idle links connecttwo keeps open (--pool), and MaxPool the most
// it accepts.
const (
	DefaultPool = 2
	MaxPool     = 1024
)

// maxOpening is how many links connecttwo connects and handshakes at once: a large pool
// opens in steps of this many, not all at once, and a relay that does not answer holds at
// most this many of its connection attempts.
const maxOpening = 32

// stableLink is how long a link must have stayed up for its loss to reset the backoff, so
// that a relay which accepts links and drops them at once is not hammered.
const stableLink = time.Second

// idleTrim is how long a link beyond Pool waits idle before it is closed while more than
// Pool links are idle (a TLS link that came back from a session, a plain link opened in a
// burst: see maxBurst): a steady load keeps the links it needs, and a load that fell gives
// its extra links back.
const idleTrim = 5 * time.Second

// firstRead bounds the read that takes a link's first bytes; whatever it gets beyond a
// hello is replayed to the service, and the rest flows by splice.
const firstRead = 16 << 10

// AgentConfig is connecttwo's configuration. Build it from flags, check it with Validate,
// then hand it to NewAgent.
type AgentConfig struct {
	// Relay is listentwo's link port (-s); Service is the hidden service (-d).
	Relay, Service endpoint.Endpoint
	// Local is the INADDR_DEFAULT address, or the zero Addr.
	Local netip.Addr
	// Loops is how many event loops relay the taken plain links and their service
	// connections; zero means GOMAXPROCS.
	Loops int
	// Hello expects a PROXY v1 header on each taken link (--hello-from-src).
	Hello bool
	// SendProxy passes that header on to the service (--send-proxy); needs Hello.
	SendProxy bool
	// Pool is how many idle links to keep open at least (--pool); a burst of clients opens
	// up to maxBurst plain links more.
	Pool int
	// Secret, when set, is the shared secret links prove (--secret-file), and SecretFile
	// the file it was read from, which Reload rereads.
	Secret     []byte
	SecretFile string
	// HandshakeTimeout bounds a link's handshake and the read of a hello; zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DialTimeout bounds each connection attempt; zero means endpoint.DefaultDialTimeout.
	DialTimeout time.Duration
	// BackoffBase and BackoffMax shape the reconnect delays; zero means the defaults. A
	// link cut or refused during its handshake, which strangers on the relay can cause,
	// waits at most RefusedMax (zero: DefaultRefusedMax) before the next try.
	BackoffBase, BackoffMax, RefusedMax time.Duration
	// Dial opens the TLS links' connections to the relay; nil dials from Local. Plain
	// links, and every connection to the service, are connected on the event loops
	// (loopdial), from Local.
	Dial func(ctx context.Context, ep endpoint.Endpoint) (*net.TCPConn, error)
	// Log receives one line per event; nil discards them.
	Log *connlog.Logger
	// Rand is the nonce source; nil means crypto/rand.
	Rand io.Reader
	// TLS, when set, is how links check the relay (--tls-pin, --tls-ca): every link runs
	// TLS 1.3 before its handshake, and the relays copy through it.
	TLS *tlslink.Client

	// lookup resolves the service's name for a plain link; nil: net.DefaultResolver.
	lookup     func(ctx context.Context, host string) ([]netip.Addr, error)
	addrsFresh time.Duration // how long a plain idle link keeps the service's addresses; zero: addrsFresh (a test seam)
	idleTrim   time.Duration // zero: idleTrim (a test seam)
}

// Validate reports a configuration no agent can run with, in plain words: cmd/connecttwo
// checks its flags first and names them, so this guards programmatic callers.
func (c *AgentConfig) Validate() error {
	switch {
	case c.Relay.Host == "" || c.Relay.Port < 1 || c.Relay.Port > 65535:
		return errors.New("the relay's address is missing or bad; want HOST:PORT")
	case c.Service.Host == "" || c.Service.Port < 1 || c.Service.Port > 65535:
		return errors.New("the service's address is missing or bad; want HOST:PORT")
	case c.Pool < 1:
		return errors.New("the pool size must be at least 1")
	case c.Pool > MaxPool:
		return fmt.Errorf("the pool size must be at most %d", MaxPool)
	case c.SendProxy && !c.Hello:
		return errors.New("SendProxy passes the hello on: it needs Hello")
	case c.Secret != nil && len(c.Secret) == 0:
		return errors.New("the secret is empty")
	case c.HandshakeTimeout < 0, c.DialTimeout < 0, c.BackoffBase < 0, c.BackoffMax < 0, c.RefusedMax < 0:
		return errors.New("timeouts must not be negative")
	}
	return nil
}

// Agent is connecttwo's engine: it keeps Pool idle links open to the relay and, when one is
// taken, connects to the service and relays the two, opening a replacement link at once.
type Agent struct {
	cfg       AgentConfig
	tlsConfig *tls.Config // nil: plain links
	// serviceName is cfg.Service as log lines write it, made once.
	serviceName string
	secret      *secretBox
	idle        *gauge
	opening     chan struct{} // one token per link being connected and handshaken
	conns       atomic.Uint64 // ids for log lines
	links       atomic.Uint64
	wg          sync.WaitGroup
	loops       *relay.Loops   // relay the taken plain links and the service; made by Run
	trim        *relay.Trimmer // gives back the TLS sessions' relay memory once idle
	// floods keeps the failures of a service that cannot be reached from writing a line
	// per client, and those of links (linkKind) from writing a line per attempt of each
	// slot: strangerBurst a strangerInterval of each, then a summary with the count.
	floods   *connlog.Summary
	linkKind string
	stats    agentStats // for the metrics: see Stats
	// serviceAt is the last answer of a lookup of the service's name (see serviceAddrs).
	serviceAt atomic.Pointer[[]netip.Addr]
	// relaySlow and serviceSlow say once that lookups of the name wait for the resolver.
	relaySlow, serviceSlow slowLookup
	// plainSlots counts the plain links' slots: Pool, and up to maxBurst more in a burst
	// (see grow); growAfter is when a burst may open links beyond Pool again (UnixNano),
	// after one of them failed to open.
	plainSlots, growAfter atomic.Int64
}

// NewAgent checks cfg and returns an agent ready to Run.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Dial == nil {
		// Links get keepalive of their own (see setKeepAlive), not the net package's.
		links := &endpoint.Dialer{Local: cfg.Local, Timeout: cfg.DialTimeout, KeepAlive: -1}
		cfg.Dial = links.Dial
	}
	if cfg.RefusedMax == 0 {
		cfg.RefusedMax = DefaultRefusedMax
	}
	if cfg.idleTrim == 0 {
		cfg.idleTrim = idleTrim
	}
	var tlsConfig *tls.Config
	if cfg.TLS != nil {
		tlsConfig = cfg.TLS.Config()
	}
	return &Agent{cfg: cfg, tlsConfig: tlsConfig, relaySlow: slowLookup{what: "the relay"}, serviceSlow: slowLookup{what: "the service"}, serviceName: cfg.Service.String(), secret: newSecretBox(cfg.Secret, cfg.SecretFile), idle: newGauge(), opening: make(chan struct{}, maxOpening),
		floods: cfg.Log.Summarise(strangerBurst, strangerInterval), linkKind: "links to " + cfg.Relay.String() + " failed",
		trim: relay.NewTrimmer(0)}, nil
}

// Reload rereads the secret file (SecretFile) and logs it: links opened from now on prove
// the new secret; links already up stay (listentwo closes its idle ones when its own
// secret changes). A file that cannot be read or holds no secret keeps the secret in use.
// connecttwo calls it on SIGHUP. Safe to call at any time, also while Run runs.
func (a *Agent) Reload() { a.secret.reload(a.cfg.Log) }

// IdleLinks returns the number of links open and waiting to be taken.
func (a *Agent) IdleLinks() int { return a.idle.get() }

// WaitIdle waits until exactly n links are idle, or ctx ends.
func (a *Agent) WaitIdle(ctx context.Context, n int) error {
	return a.idle.wait(ctx, func(k int) bool { return k == n })
}

// Run keeps the pool full until ctx ends, then closes every link and relay, waits for its
// goroutines and returns nil. Failures to reach the relay are logged and retried with
// backoff; they never end Run.
func (a *Agent) Run(ctx context.Context) error {
	loops, err := relay.NewLoops(a.cfg.Loops)
	if err != nil {
		return err
	}
	defer loops.Close() // after every relay ended (a.wg)
	a.loops = loops
	a.cfg.Log.Printf("keeping %s open to %s for %s", meter.Count(a.cfg.Pool, "link"), a.cfg.Relay, a.serviceName)
	if a.tlsConfig != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.refill(ctx)
		}()
	}
	for i := 0; i < a.cfg.Pool && a.tlsConfig == nil && ctx.Err() == nil; i++ {
		a.wg.Add(1)
		a.plainSlots.Add(1)
		a.startLoopSlot(ctx, a.loops.At(i)) // its links opened, waited on and served on the loops
	}
	<-ctx.Done() // the slots run until then
	a.cfg.Log.Printf("stopping: cutting open relays, closing idle links")
	a.wg.Wait()
	a.floods.Flush() // the last interval's count
	return nil
}

// refill keeps Pool TLS links idle or being opened: while fewer are, it takes a place among
// them (claim) and starts a slot in it. A TLS link that was taken comes back when its
// client's session ends, so a link is opened only while fewer than Pool are idle or being
// opened; and a slot ends once its link was taken and no place is free, rather than wait
// for one: under a steady load the links that came back fill the pool, and one goroutine
// waits for a place, not one per slot (each held a few KiB of stack, and each change of
// the idle count woke them all).
func (a *Agent) refill(ctx context.Context) {
	for a.idle.claim(ctx, a.cfg.Pool) {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.slot(ctx)
		}()
	}
}

// slot opens a TLS link in the place refill took for it, waits until the link is taken or
// dies, hands a taken link to serve, and opens the next while it has a place: while fewer
// than Pool links are idle or being opened without it, after a link that was taken, failed
// or died untaken. The place is checked again before each attempt, once the slot has one
// of the maxOpening places to open a link in (openPlace): links that came back from their
// sessions meanwhile (a burst's, while its replacements waited their turn) may have made
// this one too many: a relay that holds enough links refuses it ("idle link pool is
// full"), and no retry changes that, so such a slot ends. A plain link's slot runs on the
// loops (loopSlot, dial.go).
func (a *Agent) slot(ctx context.Context) {
	b := a.newSlotBook()
	claimed := true // this slot holds a place among the Pool links idle or opening
	for claimed && ctx.Err() == nil && a.openPlace(ctx, &claimed) {
		id := b.begin()
		end := a.tlsLink(ctx, id, &claimed)
		if !claimed && end.err != nil && ctx.Err() == nil {
			a.notReplaced(id, end)
			break
		}
		wait, stop := b.ended(ctx, id, end)
		if stop {
			break
		}
		if wait > 0 {
			sleep(ctx, wait)
		}
	}
	if claimed {
		a.idle.unclaim(false)
	}
}

// openPlace waits for one of the maxOpening places to open a TLS link in (given back when
// its handshake is over: see openLink), and then checks that the slot's place among the
// Pool links idle or opening is still needed; if not, it gives both back and clears
// claimed. False when the slot opens no link now.
func (a *Agent) openPlace(ctx context.Context, claimed *bool) bool {
	select {
	case a.opening <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if a.idle.keep(a.cfg.Pool) {
		return true
	}
	<-a.opening
	*claimed = false
	return false
}

// notReplaced counts and logs link id, which failed to open, was lost or was closed as not
// needed while its slot was not needed either (a TLS slot while Pool links were idle or
// being opened without it, a plain slot beyond Pool): the slot ends, and opens no link in
// its place.
func (a *Agent) notReplaced(id uint64, end linkEnd) {
	if !end.up {
		a.stats.linkFailed[connstats.FailureOf(end.err)].Add(1)
		a.linkFailed(end.err.Error(), "link #%d to %s failed: %v; not retried: more links than the pool size", id, a.cfg.Relay, end.err)
		return
	}
	a.cfg.Log.Printf("link #%d down %s: %v", id, end.addr, end.err)
}

// slotBook is one slot's account of its links, on whichever runs the slot (a goroutine for
// TLS links, the loops for plain ones): the links' numbers, the two backoffs, and whether
// the next link replaces one that failed or was lost (a reconnect). Not safe for
// simultaneous use.
type slotBook struct {
	a *Agent
	// A relay that cannot be reached is retried with the full backoff; a link cut during
	// its handshake (as when strangers crowd the relay's link port) with a short one.
	unreachable, cut Backoff
	retry            uint64 // the number of a link that failed to open: its retry keeps it
	again            bool   // the link before failed or was lost
}

func (a *Agent) newSlotBook() *slotBook {
	b := &slotBook{a: a, unreachable: Backoff{Base: a.cfg.BackoffBase, Max: a.cfg.BackoffMax}}
	b.cut = Backoff{Base: a.cfg.BackoffBase, Max: min(a.cfg.RefusedMax, b.unreachable.max())}
	return b
}

// begin numbers the slot's next link (numbers count links, not attempts) and counts it
// connecting, and a reconnect when it replaces a link that failed or was lost.
func (b *slotBook) begin() uint64 {
	id := b.retry
	if id == 0 {
		id = b.a.links.Add(1)
	}
	b.retry = 0
	if b.again {
		b.a.stats.reconnects.Add(1)
	}
	b.again = true
	b.a.stats.connecting.Add(1)
	return id
}

// ended logs how link id ended and returns how long the slot waits before its next link;
// stop once ctx has ended (the slot ends then).
func (b *slotBook) ended(ctx context.Context, id uint64, end linkEnd) (wait time.Duration, stop bool) {
	a := b.a
	switch {
	case !end.up:
		if ctx.Err() != nil {
			return 0, true
		}
		err := end.err
		a.stats.linkFailed[connstats.FailureOf(err)].Add(1)
		bo := &b.unreachable
		if isCut(err) {
			bo = &b.cut
		}
		d := bo.Next()
		a.linkFailed(err.Error(), "link #%d to %s failed: %v; retry %d in %.3fs", id, a.cfg.Relay, err, bo.Failures(), d.Seconds())
		b.retry = id
		return d, false
	case end.err != nil:
		if ctx.Err() != nil {
			a.cfg.Log.Printf("link #%d down %s: agent stopping", id, end.addr)
			return 0, true
		}
		if time.Since(end.at) >= stableLink {
			b.unreachable.Reset()
			b.cut.Reset()
			a.cfg.Log.Printf("link #%d down %s: %v", id, end.addr, end.err)
			return 0, false
		}
		// Lost within stableLink of its verdict: a relay that takes links and drops them
		// (or one that stops and starts again and again) is failing, and gets the full
		// backoff, as one that cannot be reached; the next link comes after the delay.
		d := b.unreachable.Next()
		a.linkFailed("lost at once: "+end.err.Error(), "link #%d down %s: %v; retry %d in %.3fs", id, end.addr, end.err, b.unreachable.Failures(), d.Seconds())
		return d, false
	}
	b.unreachable.Reset()
	b.cut.Reset()
	b.again = false // taken, not lost: its replacement is no reconnect
	return 0, ctx.Err() != nil
}

// tlsLink opens the TLS link id, waits until it is taken and serves it (waitAndServe), and
// returns how it ended, as a plain link tells its loopSlot. claimed is the slot's claim
// on the idle count, which a link that comes up turns into an idle link.
func (a *Agent) tlsLink(ctx context.Context, id uint64, claimed *bool) linkEnd {
	link, rw, rest, err := a.openLinkAside(ctx)
	a.stats.connecting.Add(-1)
	if err != nil {
		// The place stays the slot's while fewer than Pool links are idle or being
		// opened without it: then the relay is failing, or holds links of others.
		*claimed = a.idle.keep(a.cfg.Pool)
		return linkEnd{err: err}
	}
	end := linkEnd{up: true, at: time.Now(), addr: fmt.Sprintf("%s -> %s", link.LocalAddr(), link.RemoteAddr())}
	a.stats.linksUp.Add(1)
	if *claimed {
		a.idle.unclaim(true)
		*claimed = false
	} else {
		a.idle.add(1)
	}
	a.cfg.Log.Printf("link #%d up %s", id, end.addr)
	end.err = a.waitAndServe(ctx, id, end.addr, link, rw.(*tls.Conn), rest)
	// The link is off the idle count, and its place the slot's again (see waitAndServe),
	// kept for the next link only if fewer than Pool links are idle or being opened without
	// it, whether this one was taken or died. A link closed as not needed gave its place
	// up: the slot ends.
	*claimed = !errors.Is(end.err, errTrimmed) && a.idle.keep(a.cfg.Pool)
	return end
}

// waitAndServe waits until the TLS link (link, tc) is taken and serves its sessions on a
// goroutine of its own (keep), returning once the first session's service connection is
// made or has failed (or ctx ends), so that the replacement opens at once but not in the
// way of the connection being set up; it returns why the link ended first when it was
// never taken, and closes it then. Either way the link's place among the Pool links idle
// or opening goes back to the slot (reclaim), so that refill does not take it meanwhile;
// but a link closed as not needed (idle for idleTrim while more than Pool are idle, as a
// link that came back is) gave its place up, and its slot ends.
func (a *Agent) waitAndServe(ctx context.Context, id uint64, addr string, link *net.TCPConn, tc *tls.Conn, rest []byte) error {
	fl := newFramedLink(link, tc, rest)
	sess, first, err := a.waitSession(ctx, fl, true)
	if errors.Is(err, errTrimmed) { // off the idle count already, and its place with it
		link.Close()
		return err
	}
	a.idle.reclaim() // its place is the slot's until the service connection is made
	if err != nil {
		link.Close()
		return err
	}
	dialed := make(chan struct{})
	a.wg.Add(1)
	a.stats.busy.Add(1)
	go func() {
		defer a.wg.Done()
		a.keep(ctx, id, addr, fl, sess, first, dialed)
	}()
	select {
	case <-dialed:
	case <-ctx.Done():
	}
	return nil
}

// openLinkAside is openLink on a goroutine of its own, which ends with it: the TLS
// handshake grows a goroutine's stack to tens of KiB, and the slot's goroutine, which then
// waits while its link is idle, would keep that stack for as long.
func (a *Agent) openLinkAside(ctx context.Context) (*net.TCPConn, net.Conn, []byte, error) {
	type opened struct {
		c    *net.TCPConn
		tc   net.Conn
		rest []byte
		err  error
	}
	done := make(chan opened, 1)
	go func() {
		c, tc, rest, err := a.openLink(ctx)
		done <- opened{c, tc, rest, err}
	}()
	o := <-done
	return o.c, o.tc, o.rest, o.err
}

// openLink connects to the relay and runs the TLS link's handshake (TLS first), in the
// place among the maxOpening that its slot took (openPlace), which it gives back. It
// returns the TCP connection, the TLS session over it and the bytes that came after the
// verdict.
func (a *Agent) openLink(ctx context.Context) (*net.TCPConn, net.Conn, []byte, error) {
	defer func() { <-a.opening }()
	c, err := a.cfg.Dial(ctx, a.cfg.Relay)
	if errors.Is(err, syscall.ECONNRESET) {
		err = &cutError{err} // accepted and reset at once: the relay is there
	}
	if err != nil {
		return nil, nil, nil, err
	}
	setKeepAlive(c)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	var rest []byte
	tc, binding, err := a.clientTLS(ctx, c)
	a.trim.Released() // the handshake's garbage (key shares, the certificate, its check)
	if err == nil {
		rest, err = clientHandshake(tc, linkParams{
			hello: a.cfg.Hello, secret: a.secret.get(), rand: a.cfg.Rand, timeout: a.cfg.HandshakeTimeout,
			binding: binding, frames: true,
		})
	}
	if err == nil && len(rest) == 0 {
		rest, err = buffered(tc)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.Close() // raw: an idle or failed link ends without close_notify
		return nil, nil, nil, err
	}
	return c, tc, rest, nil
}

// serve connects a taken link to the service and relays the two. first holds the bytes
// read so far: a hello (when Hello is set) and possibly the client's first data.
// dialed is closed once the service connection is made or has failed.
func (a *Agent) serve(ctx context.Context, linkID uint64, link *net.TCPConn, rw net.Conn, first []byte, dialed chan<- struct{}) {
	var once sync.Once
	signal := func() { once.Do(func() { close(dialed) }) }
	defer signal()
	id := a.conns.Add(1)
	client := fmt.Sprintf("link #%d %s", linkID, link.RemoteAddr())
	source := sourceOf(link.RemoteAddr()) // the client's, once a hello names it
	service := a.cfg.Service.String()
	counts := &a.stats.conns
	counts.Accepted()
	relaying := false // the relay took the link: its end counts the link no longer busy
	defer func() {
		if !relaying {
			a.stats.busy.Add(-1)
		}
	}()
	failed := func(err error) {
		f := connstats.FailureOf(err)
		if ctx.Err() != nil {
			f = connstats.FailCut
		}
		counts.Failed(f)
		a.failed(id, client, source, err)
	}
	// Until the relay takes over, the end of ctx closes the link (and so ends a hello read).
	unwatch := context.AfterFunc(ctx, func() { link.Close() })
	defer unwatch()
	// payload is the client's data read so far; replay is what the service gets first.
	payload, replay := first, first
	if a.cfg.Hello {
		h, raw, rest, err := readHello(rw, first, a.cfg.HandshakeTimeout)
		if err != nil {
			if s, ok := rw.(*linkSession); ok {
				s.fail(err) // out of step with the relay: the link goes
			}
			_ = link.SetLinger(0)
			link.Close()
			failed(err)
			return
		}
		client = fmt.Sprintf("%s (link #%d)", h.SourceAddr, linkID)
		source = sourceOf(h.SourceAddr)
		payload, replay = rest, rest
		if a.cfg.SendProxy {
			replay = append(append(make([]byte, 0, len(raw)+len(rest)), raw...), rest...)
		}
	}
	dialStart := time.Now()
	srv, err := a.dialServiceFor(ctx)
	signal()
	if err != nil {
		// Reset the link so the client sees its connection end at once, not a hang.
		resetClient(ctx, link, rw)
		counts.AttemptFailed(connstats.FailureOf(err))
		failed(err)
		return
	}
	dialTime := time.Since(dialStart)
	if len(replay) > 0 {
		_ = srv.SetWriteDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
		_, err := srv.Write(replay)
		_ = srv.SetWriteDeadline(time.Time{})
		if err != nil {
			resetClient(ctx, link, rw)
			srv.Close()
			failed(fmt.Errorf("writing to %s: %w", service, readErr(err)))
			return
		}
	}
	if !unwatch() {
		srv.Close()
		counts.Failed(connstats.FailCut)
		return
	}
	a.cfg.Log.Open(id, client, service)
	counts.Opened(dialTime)
	counts.Up(len(payload)) // the client's bytes that came with the hello or the first read
	relaying = true
	a.wg.Add(1) // until the relay's end, which Run waits for
	relayPaired(ctx, a.loops, a.trim, rw, srv, counts, func(res relay.Result) {
		up := uint64(res.Up) + uint64(len(payload))
		a.cfg.Log.Close(id, client, service, up, uint64(res.Down), res.Duration, res.End)
		counts.Ended(connstats.EndOf(res.End))
		a.stats.busy.Add(-1)
		a.wg.Done()
	})
}

// resetClient resets the client of a taken link whose service connection failed: a plain
// link is reset (listentwo passes the reset on); on a TLS link the session is ended with
// a RST, and the link is kept for the next one.
func resetClient(ctx context.Context, link *net.TCPConn, rw net.Conn) {
	if s, ok := rw.(*linkSession); ok {
		_ = s.Reset()
		s.End(ctx)
		if s.reusable {
			return
		}
	}
	_ = link.SetLinger(0)
	link.Close()
}

// errTrimmed is why an idle TLS link was closed: more than Pool links were idle.
var errTrimmed = errors.New("not needed: more idle links than the pool size")

// waitSession waits, on a TLS link, for the next session: the first DATA frame from the
// relay (with hellos, the hello). It returns the session and its first bytes, or why the
// link ended first. With trim, a link idle for idleTrim while more than Pool are idle is
// given up (errTrimmed, already off the idle count). It holds no buffer while it waits.
func (a *Agent) waitSession(ctx context.Context, fl *framedLink, trim bool) (*linkSession, []byte, error) {
	sess := fl.session(ctx)
	stop := context.AfterFunc(ctx, func() { _ = fl.tcp.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var one [1]byte
	for {
		var by time.Time
		if trim {
			by = time.Now().Add(a.cfg.idleTrim)
		}
		_ = fl.tcp.SetReadDeadline(by)
		if ctx.Err() != nil { // after the deadline is set: the stop's own comes after it
			return nil, nil, ctx.Err()
		}
		n, err := sess.Read(one[:])
		var fe *frameError
		switch {
		case n == 1:
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil:
			if a.idle.trim(a.cfg.Pool) {
				return nil, nil, errTrimmed
			}
			continue
		case errors.Is(err, errLinkEnded):
			return nil, nil, errors.New("closed by listentwo")
		case errors.Is(err, io.EOF), errors.Is(err, errPeerRst):
			return nil, nil, &frameError{"an end frame on an idle link"}
		case errors.As(err, &fe):
			return nil, nil, err
		default:
			return nil, nil, readErr(err)
		}
		break
	}
	buf := make([]byte, firstRead)
	buf[0] = one[0]
	m := 0
	if fl.fr.inFrame() > 0 { // the rest of the frame, which came in the same record
		_ = fl.tcp.SetReadDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
		m, _ = sess.Read(buf[1:])
	}
	_ = fl.tcp.SetReadDeadline(time.Time{})
	return sess, buf[:1+m], nil
}

// keep serves the sessions of a TLS link one after another: sess first, and then, while
// the link comes out of each session intact, the next one it waits for idle. It closes the
// link, with a down line, when a session broke it, when it is not needed any more
// (errTrimmed) or ends, or when the agent stops. dialed is for the first session (see
// serve).
//
// The wait for the next session runs on a goroutine of its own (idleLink), and keep's
// goroutine ends: its stack grew with the relay (the bulk copy, crypto/tls), and a
// goroutine keeps the stack it grew to while it waits, so an idle link that had carried a
// session held that stack; a new goroutine starts small, and the old stack is freed.
func (a *Agent) keep(ctx context.Context, id uint64, addr string, fl *framedLink, sess *linkSession, first []byte, dialed chan<- struct{}) {
	a.serve(ctx, id, fl.tcp, sess, first, dialed)
	why := sess.unusable()
	if ctx.Err() != nil {
		why = errors.New("agent stopping")
	}
	if why != nil {
		a.linkDown(id, addr, fl, why)
		return
	}
	a.idle.add(1)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.idleLink(ctx, id, addr, fl)
	}()
}

// idleLink waits on a TLS link that came back from a session for the next one, and serves
// it (keep); or closes the link when it ends, is not needed any more, or the agent stops.
// The link is counted idle already.
func (a *Agent) idleLink(ctx context.Context, id uint64, addr string, fl *framedLink) {
	sess, first, why := a.waitSession(ctx, fl, true)
	if !errors.Is(why, errTrimmed) {
		a.idle.add(-1)
	}
	if ctx.Err() != nil {
		why = errors.New("agent stopping")
	}
	if why != nil {
		a.linkDown(id, addr, fl, why)
		return
	}
	a.stats.busy.Add(1)
	a.keep(ctx, id, addr, fl, sess, first, make(chan struct{})) // nobody waits for dialed
}

// linkDown closes a TLS link raw (without close_notify) and logs why.
func (a *Agent) linkDown(id uint64, addr string, fl *framedLink, why error) {
	fl.tcp.Close()
	a.trim.Released()
	a.cfg.Log.Printf("link #%d down %s: %v", id, addr, why)
}

// failed logs a client whose service connection failed. Beyond strangerBurst of them in a
// strangerInterval (a service that is down, and thousands of clients), they are counted
// by reason and source and summed up in one line.
func (a *Agent) failed(id uint64, client string, source netip.Prefix, err error) {
	service := a.cfg.Service.String()
	if a.floods.Allow("failed -> "+service, connlog.Error, err.Error(), source) {
		a.cfg.Log.Failed(id, client, service, err)
	}
}

// linkFailed logs a link that failed to open, or was lost within stableLink of its
// verdict (reason says why, for the summary), as a warning: beyond strangerBurst of them
// in a strangerInterval (a relay that is down or sick, and a pool of hundreds of slots
// retrying), they are counted by reason and summed up in one line, so that the log says
// a few lines per 10 s however large the pool. The kind names the relay; the lines have no
// source of their own.
func (a *Agent) linkFailed(reason, format string, args ...any) {
	a.floods.Event(a.linkKind, connlog.Warning, reason, netip.Prefix{}, format, args...)
}

// gauge is a counter that can be waited on. Safe for simultaneous use.
type gauge struct {
	mu      sync.Mutex
	n       int
	claims  int // places held by links being opened (see claim)
	changed chan struct{}
}

func newGauge() *gauge { return &gauge{changed: make(chan struct{})} }

// add adds d to the gauge and returns what it holds then.
func (g *gauge) add(d int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n += d
	g.notifyLocked()
	return g.n
}

// claim waits until the gauge and the claims held are below limit, then holds one more
// claim; false when ctx ends first.
func (g *gauge) claim(ctx context.Context, limit int) bool {
	for {
		g.mu.Lock()
		if g.n+g.claims < limit {
			g.claims++
			g.mu.Unlock()
			return true
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// unclaim gives a claim back; with up it becomes one on the gauge.
func (g *gauge) unclaim(up bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.claims--
	if up {
		g.n++
	}
	g.notifyLocked()
}

// reclaim turns one on the gauge back into a claim (a link that leaves the idle count
// keeps its place for its slot): the sum, which claim waits on, stays the same.
func (g *gauge) reclaim() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	g.claims++
	g.notifyLocked()
}

// keep reports whether a claim held may stay, the gauge and the other claims being below
// limit; if not, it gives the claim back.
func (g *gauge) keep(limit int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n+g.claims-1 < limit {
		return true
	}
	g.claims--
	g.notifyLocked()
	return false
}

// trim takes one off the gauge if it is above limit, and reports whether it did.
func (g *gauge) trim(limit int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n <= limit {
		return false
	}
	g.n--
	g.notifyLocked()
	return true
}

func (g *gauge) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *gauge) get() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func (g *gauge) wait(ctx context.Context, cond func(int) bool) error {
	for {
		g.mu.Lock()
		n, ch := g.n, g.changed
		g.mu.Unlock()
		if cond(n) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
