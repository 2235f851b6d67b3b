package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/accept"
	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
	"shd-tcp-tools/internal/tlslink"
)

// Defaults of listentwo's limits.
const (
	// DefaultWait is how long a client waits for an idle link (--wait).
	DefaultWait = 30 * time.Second
	// DefaultMaxLinks caps the idle links the relay keeps (--max-links).
	DefaultMaxLinks = 64
	// DefaultMaxHandshakes caps the links that have not finished their handshake: waiting
	// for their opening or in the exchange. A newcomer past it pushes the oldest silent one
	// out (see room).
	DefaultMaxHandshakes = 256
	// DefaultFirstByte is how long a new link has to send its opening.
	DefaultFirstByte = 2 * time.Second
	// DefaultMaxSilentClients caps the clients that wait for their first byte (without
	// hellos), and DefaultMaxSilentPerSource the share of one source address (an IPv6 /64).
	DefaultMaxSilentClients   = 1024
	DefaultMaxSilentPerSource = 64
	// strangerBurst lines of each kind of refusal are logged one by one per
	// strangerInterval; the rest are summarised at the end of the interval.
	strangerBurst    = 10
	strangerInterval = 10 * time.Second
)

// SpareProcs is how many Ps beyond its Loops listentwo and connecttwo run with
// (GOMAXPROCS, which cmd/* sets): one event loop per CPU relays the paired connections,
// and the control plane's goroutines (handshakes, accepts) run beside them on spare Ps.
// While a P is idle, Go's sysmon leaves a loop waiting in epoll_wait alone, where with one
// spare P, busy with the control plane, it took the loop's P back every round and woke
// every 20 µs (about a sixth of each process's CPU time per new client; four spare Ps:
// 10-15% less CPU per client, docs/tunnel.md).
const SpareProcs = 4

// Kinds of refusal, each with its own burst of log lines (see connlog.Summary).
const (
	kindSilentLink   = "links refused before their opening"
	kindLink         = "links refused"
	kindSilentClient = "clients refused before their first byte"
	kindClient       = "clients refused"
	kindNoLink       = "clients given up without a link"
)

// RelayConfig is listentwo's configuration. Build it from flags, check it with Validate,
// then hand it to NewRelay.
type RelayConfig struct {
	// Clients is where clients connect (-s); Links is where connecttwo's links connect (-d).
	// An empty Host listens on every address, or on Local when it is set.
	Clients, Links endpoint.Endpoint
	// Local is the INADDR_DEFAULT address, or the zero Addr.
	Local netip.Addr
	// Loops is how many event loops relay the paired plain connections; zero means
	// GOMAXPROCS.
	Loops int
	// Hello sends each taken link a PROXY v1 header naming the client (--hello-dst).
	Hello bool
	// Allow is the client allow list (-a); nil or empty serves everyone.
	Allow *allow.List
	// Wait is how long a client waits for an idle link (--wait); zero: not at all.
	Wait time.Duration
	// Secret, when set, is the shared secret every link must prove (--secret-file), and
	// SecretFile the file it was read from, which Reload rereads.
	Secret     []byte
	SecretFile string
	// MaxLinks caps the idle pool (--max-links); zero means DefaultMaxLinks.
	MaxLinks int
	// MaxHandshakes caps the links that have not finished their handshake; zero means
	// DefaultMaxHandshakes.
	MaxHandshakes int
	// FirstByte is how long a new link has to send its opening; zero means
	// DefaultFirstByte. Without hellos, it is also how long a client has to send its first
	// byte when Wait is zero.
	FirstByte time.Duration
	// HandshakeTimeout bounds a link's handshake after its opening; zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxSilentClients and MaxSilentPerSource cap the clients waiting for their first
	// byte (without hellos), in all and per source; zero means the defaults.
	MaxSilentClients, MaxSilentPerSource int
	// Log receives one line per event; nil discards them.
	Log *connlog.Logger
	// Listen opens the listener for Clients (name "clients") and for Links ("links");
	// nil means endpoint.Listen. listentwo takes the sockets systemd passed this way.
	Listen func(ctx context.Context, name string, ep endpoint.Endpoint, local netip.Addr) (*net.TCPListener, error)
	// Ready, when set, is called once both listeners are open, and Stopped when
	// ListenAndServe returns (listentwo tells systemd); an error from Ready is logged as a
	// warning.
	Ready   func() error
	Stopped func()
	// Rand is the nonce source; nil means crypto/rand.
	Rand io.Reader
	// TLS, when set, is the relay's TLS identity (--tls-key, --tls-cert): every link runs
	// TLS 1.3 before its handshake, and the relays copy through it.
	TLS *tlslink.Server
}

// Validate reports a configuration no relay can run with, in plain words: cmd/listentwo
// checks its flags first and names them, so this guards programmatic callers.
func (c *RelayConfig) Validate() error {
	switch {
	case c.Clients.Port < 1 || c.Clients.Port > 65535:
		return errors.New("the clients' port is missing or bad; want [ADDR:]PORT")
	case c.Links.Port < 1 || c.Links.Port > 65535:
		return errors.New("the links' port is missing or bad; want [ADDR:]PORT")
	case c.Clients == c.Links:
		return fmt.Errorf("clients and links on the same address %s", c.Clients)
	case c.Wait < 0:
		return errors.New("the wait must not be negative")
	case c.MaxLinks < 0:
		return errors.New("the idle link limit must not be negative")
	case c.MaxHandshakes < 0:
		return errors.New("the handshake limit must be at least 1")
	case c.HandshakeTimeout < 0, c.FirstByte < 0:
		return errors.New("the handshake timeouts must not be negative")
	case c.MaxSilentClients < 0, c.MaxSilentPerSource < 0:
		return errors.New("the silent client limits must be at least 1")
	case c.Secret != nil && len(c.Secret) == 0:
		return errors.New("the secret is empty")
	}
	return nil
}

// Relay is listentwo's engine: it accepts clients and links, pools the links that pass the
// handshake, pairs each client with the newest idle link, and relays the two.
type Relay struct {
	cfg       RelayConfig
	tlsConfig *tls.Config // nil: plain links
	secret    *secretBox
	pool      *pool[*idleLink]
	// linkRoom holds the links before their handshake is done; clientRoom, without
	// hellos, the clients before their first byte.
	linkRoom, clientRoom *room
	// strangers logs refusals, summarised when they come in floods.
	strangers *connlog.Summary

	conns, links atomic.Uint64 // ids for log lines
	wg           sync.WaitGroup
	// back pauses both listeners while the process is short of descriptors or memory.
	back  accept.Backoff
	loops *relay.Loops // relay the paired plain links and clients; made by Serve
	// trim gives back the memory of the TLS sessions' relays once none has run a while.
	trim *relay.Trimmer
	// stats are the counts for the metrics: see Stats.
	stats relayStats
}

// idleLink is a link that passed the handshake and waits in the pool. While idle, it is
// watched until it becomes readable, which only happens when it dies: a plain link by an
// event loop (fd, loop), a TLS link by a watcher goroutine (conn).
type idleLink struct {
	id     uint64
	conn   *net.TCPConn // TLS: watched, checked and closed raw; nil for a plain link
	rw     net.Conn     // TLS: what the hello and the relay go through, TLS over conn
	fl     *framedLink  // TLS: the sessions in frames over rw
	proved []byte       // the secret its handshake proved (nil: none), which a reload may change
	// fd is a plain link's socket, taken from the standard library and watched by loop
	// (see watchOnLoop); -1 for a TLS link.
	fd    int
	loop  *relay.Loop
	addr  string
	done  chan struct{} // closed when the watcher returns; nil when never watched
	cause error         // why the watcher returned; nil when stopped; read after done
}

// NewRelay checks cfg and returns a relay ready to Serve.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxLinks == 0 {
		cfg.MaxLinks = DefaultMaxLinks
	}
	if cfg.MaxHandshakes == 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.FirstByte == 0 {
		cfg.FirstByte = DefaultFirstByte
	}
	if cfg.MaxSilentClients == 0 {
		cfg.MaxSilentClients = DefaultMaxSilentClients
	}
	if cfg.MaxSilentPerSource == 0 {
		cfg.MaxSilentPerSource = DefaultMaxSilentPerSource
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	var tlsConfig *tls.Config
	if cfg.TLS != nil {
		tlsConfig = cfg.TLS.Config()
	}
	return &Relay{
		cfg:        cfg,
		tlsConfig:  tlsConfig,
		secret:     newSecretBox(cfg.Secret, cfg.SecretFile),
		pool:       newPool[*idleLink](cfg.MaxLinks),
		linkRoom:   newRoom(cfg.MaxHandshakes, cfg.MaxHandshakes),
		clientRoom: newRoom(cfg.MaxSilentClients, cfg.MaxSilentPerSource),
		trim:       relay.NewTrimmer(0),
		strangers:  cfg.Log.Summarise(strangerBurst, strangerInterval),
	}, nil
}

// ListenAndServe opens the client and link listeners (through Listen, when set), calls
// Ready, and serves until ctx ends; then it calls Stopped.
func (r *Relay) ListenAndServe(ctx context.Context) error {
	if r.cfg.Stopped != nil {
		defer r.cfg.Stopped()
	}
	listen := r.cfg.Listen
	if listen == nil {
		listen = func(ctx context.Context, _ string, ep endpoint.Endpoint, local netip.Addr) (*net.TCPListener, error) {
			return endpoint.Listen(ctx, ep, local)
		}
	}
	clients, err := listen(ctx, "clients", r.cfg.Clients, r.cfg.Local)
	if err != nil {
		return err
	}
	links, err := listen(ctx, "links", r.cfg.Links, r.cfg.Local)
	if err != nil {
		clients.Close()
		return err
	}
	r.cfg.Log.Printf("listening for clients on %s and for links on %s", clients.Addr(), links.Addr())
	if r.cfg.Ready != nil {
		if err := r.cfg.Ready(); err != nil {
			r.cfg.Log.Warnf("warning: %v", err)
		}
	}
	return r.Serve(ctx, clients, links)
}

// Serve accepts clients on clients and links on links until ctx ends or a listener fails,
// then closes both listeners, ends every relay and idle link, waits for its goroutines,
// and returns nil after a cancelled ctx. Both listeners must yield *net.TCPConn.
func (r *Relay) Serve(ctx context.Context, clients, links net.Listener) error {
	loops, err := relay.NewLoops(r.cfg.Loops)
	if err != nil {
		clients.Close()
		links.Close()
		return err
	}
	defer loops.Close() // after every relay ended (r.wg)
	r.loops = loops
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		clients.Close()
		links.Close()
	})
	defer stop()

	// Links always speak first; clients do without hellos.
	if !r.cfg.Hello {
		deferAccept(clients)
	}
	deferAccept(links)
	// A loop accept's end for good, or a goroutine accept's (each one at most), is kept.
	errs := make(chan error, 2+2*loops.Len())
	fatal := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var accepting sync.WaitGroup
	var stops []func() // of the loop accepts
	for _, t := range []struct {
		what   string
		ln     net.Listener
		admit  func(context.Context, *net.TCPConn) func()
		onLoop func(context.Context) func(*relay.Loop, *accept.OnLoop, int, netip.AddrPort)
	}{{"client", clients, r.admitClient, r.clientOnLoop}, {"link", links, r.admitLink, r.linkOnLoop}} {
		// Plain links, and the clients paired with them, are accepted as raw sockets on
		// the event loops. (An error here is a closed listener, which Accept reports too.)
		if tl, ok := t.ln.(*net.TCPListener); ok && r.tlsConfig == nil {
			if stop, err := r.acceptOnLoops(t.what, tl, t.onLoop(ctx), fatal); err == nil {
				stops = append(stops, stop)
				continue
			}
		}
		take := takeConn(ctx, t.ln, t.admit)
		accepting.Go(func() { errs <- r.accept(ctx, t.what, take) })
	}
	select {
	case err = <-errs:
	case <-ctx.Done():
		err = net.ErrClosed
	}
	if ctx.Err() != nil { // a line all the same when nothing was open: a log that just ends reads as a crash
		r.cfg.Log.Printf("stopping: cutting open relays, closing idle links")
	}
	for _, stop := range stops {
		stop()
	}
	cancel()
	accepting.Wait()
	r.pool.cancel(ctx.Err()) // the clients that wait for a link without a goroutine
	// The cancelled ctx ends every handshake, wait, relay and idle-link watch.
	r.wg.Wait()
	r.closeIdle("relay stopping")
	r.strangers.Flush()
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// closeIdle closes every idle link, logging why.
func (r *Relay) closeIdle(why string) {
	for _, l := range r.pool.drain() {
		r.closeLink(l)
		r.cfg.Log.Printf("link #%d down %s: %s", l.id, l.addr, why)
	}
}

// Reload rereads the secret file (SecretFile) and logs it. When the secret changed, links
// that connect from now on must prove the new one, and the idle links, which proved the
// old one, are closed: connecttwo reconnects them and proves the new secret, or is
// refused. A file that cannot be read or holds no secret keeps the secret in use.
// listentwo calls it on SIGHUP. Safe to call at any time, also while Serve runs.
func (r *Relay) Reload() {
	if r.secret.reload(r.cfg.Log) {
		r.closeIdle("the secret changed")
	}
}

// IdleLinks returns the number of links waiting in the pool.
func (r *Relay) IdleLinks() int { return r.pool.len() }

// WaitingClients returns the number of clients waiting for a link.
func (r *Relay) WaitingClients() int { return r.pool.waiting() }

// WaitIdle waits until the pool holds exactly n idle links, or ctx ends.
func (r *Relay) WaitIdle(ctx context.Context, n int) error {
	return r.pool.waitUntil(ctx, func(k, _ int) bool { return k == n })
}

// accept serves the connections of one listener until it fails for good: take accepts the
// next connection and admits it, on the accepting goroutine, so the next connection is not
// accepted before it has decided (and a room has made its place: the rooms bound the
// connections held, not only those admitted); it returns the rest of the connection's
// service, run on a goroutine of its own, or nil when nothing is left to run there. Errors
// of take are accept(2)'s: a shortage pauses accepting (accept.Backoff), a connection's own
// network error is skipped, anything else ends the serving.
func (r *Relay) accept(ctx context.Context, what string, take func() (serve func(), err error)) error {
	for {
		serve, err := take()
		if err != nil {
			if ctx.Err() != nil {
				return net.ErrClosed
			}
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout(), accept.Classify(err) == accept.Again:
				continue
			case accept.Classify(err) == accept.Short:
				if line := r.back.Fail(time.Now(), err); line != "" {
					r.cfg.Log.Warnf("accepting %ss: %s", what, line)
				}
				if !sleep(ctx, max(r.back.Pause(time.Now()), accept.MinPause)) {
					return net.ErrClosed
				}
				continue
			}
			return fmt.Errorf("accepting %ss: %w", what, err)
		}
		if line := r.back.OK(); line != "" {
			r.cfg.Log.Warnf("accepting %ss: %s", what, line)
		}
		if serve != nil {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				serve()
			}()
		}
	}
}

// takeConn is accept's take for connections from ln through the standard library, each
// handed to admit.
func takeConn(ctx context.Context, ln net.Listener, admit func(context.Context, *net.TCPConn) func()) func() (func(), error) {
	return func() (func(), error) {
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("%T is not a TCP connection", c)
		}
		return admit(ctx, tc), nil
	}
}

// admitLink makes a new link a guest of linkRoom, which may push it out to make room for
// newcomers until its handshake is done, and returns the rest of its service. A link whose
// opening is already there (as it usually is: the listener defers accepts until data comes)
// enters as engaged, after every stranger that has not sent one. A plain link's handshake
// runs on an event loop (shakeOnLoop), a TLS link's on a goroutine of its own (serveLink).
func (r *Relay) admitLink(ctx context.Context, c *net.TCPConn) func() {
	if r.tlsConfig == nil {
		remote := c.RemoteAddr()
		fd, err := relay.Detach(c)
		if err != nil {
			c.Close()
			r.cfg.Log.Warnf("link #%d refused %s: %v", r.links.Add(1), remote, err)
			return nil
		}
		ap, _ := netip.ParseAddrPort(remote.String())
		pushed := r.shakeOnLoop(ctx, r.loops.Least(), false, fd, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		pushed.gone(ctx) // before the next accept
		return nil
	}
	g, _ := r.linkRoom.enter(c, r.linkClass(peekNow(c, len(opening))))
	return func() { r.serveLink(ctx, c, g) }
}

// linkClass is the class in linkRoom of a link whose first bytes are first.
func (r *Relay) linkClass(first []byte) class {
	switch {
	case r.cfg.TLS == nil && string(first) == opening, r.cfg.TLS != nil && looksTLS(first):
		return engaged
	case len(first) > 0:
		return spoke
	}
	return silent
}

// linkHooks are the room's and the pool's part in the handshake of the link that is
// guest g of linkRoom.
func (r *Relay) linkHooks(g *guest) serverHooks {
	return serverHooks{
		opened: func() error {
			if !r.linkRoom.advance(g, engaged) {
				return r.pushedErr(g)
			}
			return nil
		},
		admit: func() error {
			if !r.linkRoom.leave(g) {
				return r.pushedErr(g)
			}
			return r.pool.reserve()
		},
		release: r.pool.unreserve,
	}
}

// linkParams are the relay's handshake settings for a link proving secret, whose opening
// is due by openBy, in the TLS session binding (nil: plain).
func (r *Relay) linkParams(secret []byte, openBy time.Time, binding []byte) linkParams {
	return linkParams{
		hello: r.cfg.Hello, secret: secret, rand: r.cfg.Rand, timeout: r.cfg.HandshakeTimeout,
		openBy: openBy, binding: binding, frames: r.tlsConfig != nil,
	}
}

// linkRefused counts and logs link #id from addr, guest g of linkRoom, refused for err;
// nothing is logged once ctx has ended (the relay stops).
func (r *Relay) linkRefused(ctx context.Context, id uint64, addr string, g *guest, err error) {
	if ctx.Err() != nil {
		return
	}
	// Strangers that never sent an opening are counted apart from links that failed
	// the exchange, so that a flood of them cannot hide an agent's misconfiguration.
	kind, level := kindLink, connlog.Warning
	var pe errPushedOut
	if errors.As(err, &pe) && class(pe) < engaged || errors.Is(err, errNotOpening) ||
		errors.Is(err, errSilent) || errors.Is(err, errClosedEarly) {
		kind, level = kindSilentLink, connlog.Info
	}
	r.stats.handshake[refusalReason(err)].Add(1)
	r.strangers.Event(kind, level, reasonOf(err), g.source, "link #%d refused %s: %v", id, addr, err)
}

// linkUp logs and counts link l, which has joined the pool.
func (r *Relay) linkUp(l *idleLink) {
	r.stats.linksUp.Add(1)
	r.cfg.Log.Printf("link #%d up %s", l.id, l.addr)
}

// serveLink waits for a new TLS link's opening, runs the handshake and pools the link.
func (r *Relay) serveLink(ctx context.Context, c *net.TCPConn, g *guest) {
	id := r.links.Add(1)
	addr := c.RemoteAddr().String()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	refuse := func(err error) {
		stop()
		r.linkRoom.leave(g)
		_ = c.SetLinger(0)
		c.Close()
		r.linkRefused(ctx, id, addr, g, err)
	}
	if err := r.waitFirstByte(c, g, r.linkRoom, r.cfg.FirstByte); err != nil {
		refuse(err)
		return
	}
	if err := r.refusePlain(c); err != nil {
		refuse(err)
		return
	}
	tc, binding, err := r.serverTLS(ctx, c)
	r.trim.Released() // the handshake's garbage (key shares, the signature)
	if err != nil {
		refuse(err)
		return
	}
	// The opening, inside TLS, is due FirstByte after the TLS handshake.
	secret := r.secret.get()
	err = serverHandshake(tc, r.linkParams(secret, time.Now().Add(r.cfg.FirstByte), binding), r.linkHooks(g))
	if !stop() || err != nil {
		if err == nil {
			r.pool.unreserve()
			err = ctx.Err()
		}
		if pushed, ok := r.linkRoom.pushedOut(g); ok {
			err = errPushedOut(pushed)
		}
		refuse(err)
		return
	}
	// Accepted connections already have the net package's keepalive (15 s), which is
	// enough on this side: connecttwo probes more often (see setKeepAlive).
	l := &idleLink{id: id, conn: c, rw: tc, fd: -1, addr: addr, proved: secret}
	l.fl = newFramedLink(c, tc, nil)
	r.linkUp(l) // before a waiting client that takes it logs its open
	r.pool.put(l, func(l *idleLink) { r.startWatch(ctx, l) })
}

// errPushedOut is why a guest of a room ended: newer connections needed its place. Its text
// says how far the guest had got.
type errPushedOut class

func (e errPushedOut) Error() string {
	switch class(e) {
	case silent:
		return "pushed out by newer connections while silent"
	case spoke:
		return "pushed out by newer connections before it sent an opening"
	default:
		return "pushed out by newer connections during its handshake"
	}
}

// waitFirstByte waits up to d for c's first byte, consuming nothing, and records in rm that
// guest g spoke. It returns why not: silence, an early end, or g pushed out of rm.
func (r *Relay) waitFirstByte(c *net.TCPConn, g *guest, rm *room, d time.Duration) error {
	err := c.SetReadDeadline(time.Now().Add(d))
	if err == nil {
		err = waitFirstByte(c)
	}
	if pushed, ok := rm.pushedOut(g); ok || err == nil && !rm.advance(g, spoke) {
		return errPushedOut(pushed)
	}
	if errors.Is(err, errSilent) {
		return fmt.Errorf("%w within %v", errSilent, d)
	}
	if err != nil {
		return err
	}
	return c.SetReadDeadline(time.Time{})
}

// pushedErr says how far g had got when the link room pushed it out.
func (r *Relay) pushedErr(g *guest) error {
	pushed, _ := r.linkRoom.pushedOut(g)
	return errPushedOut(pushed)
}

// reasonOf names the class of a refusal for a summary: the error text up to its first
// colon (the rest often quotes the peer).
func reasonOf(err error) string {
	s := err.Error()
	if i := strings.Index(s, ":"); i >= 0 {
		s = s[:i]
	}
	return clip(s)
}

// startWatch starts the goroutine that notices an idle link dying and drops it; the end of
// ctx closes the link and so ends the watch. It runs with the pool locked (see pool.put),
// before any client can take the link.
func (r *Relay) startWatch(ctx context.Context, l *idleLink) {
	l.done = make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		stop := context.AfterFunc(ctx, func() { l.conn.Close() })
		defer stop()
		l.cause = watchIdle(l.conn)
		if l.cause != nil && ctx.Err() != nil {
			l.cause = errors.New("relay stopping")
		}
		close(l.done)
		if l.cause != nil && r.pool.remove(l) {
			l.conn.Close()
			r.trim.Released()
			r.cfg.Log.Printf("link #%d down %s: %v", l.id, l.addr, l.cause)
		}
	}()
}

// stopWatch stops l's watcher and returns why it had already stopped by itself, if it had.
func (r *Relay) stopWatch(l *idleLink) error {
	if l.done == nil {
		return nil
	}
	_ = l.conn.SetReadDeadline(time.Unix(1, 0))
	<-l.done
	_ = l.conn.SetReadDeadline(time.Time{})
	return l.cause
}

// takeLink returns the newest idle link that is still alive, waiting until deadline.
// Dead links it meets on the way are closed and logged.
func (r *Relay) takeLink(ctx context.Context, deadline time.Time) (*idleLink, error) {
	front := false
	for {
		l, err := r.pool.get(ctx, time.Until(deadline), front)
		if err != nil {
			return nil, err
		}
		var cause error
		if l.fd >= 0 {
			_, cause = peek(uintptr(l.fd)) // the loop's watch may not have seen it yet
		} else if cause = r.stopWatch(l); cause == nil {
			cause = alive(l.conn)
		}
		if cause == nil {
			return l, nil
		}
		r.closeLink(l)
		r.cfg.Log.Printf("link #%d down %s: %v", l.id, l.addr, cause)
		front = true
	}
}

// admitClient closes a client that the allow list refuses. Without hellos the client must
// speak first, so it is paired only once its first byte has arrived: until then it is a
// guest of clientRoom, which may push it out to make room for newcomers. It returns the
// rest of the client's service.
func (r *Relay) admitClient(ctx context.Context, c *net.TCPConn) func() {
	cc := clientConn{c: c, fd: -1, peer: addrPortOf(c.RemoteAddr())}
	if !r.allowed(cc) {
		return nil
	}
	var g *guest
	if !r.cfg.Hello && !pending(c) {
		g, _ = r.clientRoom.enter(c, silent)
	}
	start := time.Now()
	if g == nil && r.tlsConfig == nil {
		r.pairOrWait(ctx, cc, start, nil)
		return nil
	}
	return func() { r.serveClient(ctx, cc, g, start) }
}

// admitClientFD is admitClient for the raw socket fd of a client from peer (plain links
// only), accepted on the loop here. A client that must speak first and has not yet
// becomes a *net.TCPConn for its wait on a goroutine (serveClient); the others never do.
func (r *Relay) admitClientFD(ctx context.Context, here *relay.Loop, fd int, peer netip.AddrPort) func() {
	cc := clientConn{fd: fd, peer: peer}
	if !r.allowed(cc) {
		return nil
	}
	start := time.Now()
	if r.cfg.Hello || fdPending(fd) {
		r.pairOrWait(ctx, cc, start, here)
		return nil
	}
	f := os.NewFile(uintptr(fd), "client")
	nc, err := net.FileConn(f) // a duplicate
	f.Close()
	c, ok := nc.(*net.TCPConn)
	if err != nil || !ok {
		if nc != nil {
			nc.Close()
		}
		r.stats.conns.Failed(connstats.FailureOf(err))
		r.cfg.Log.Warnf("client %s: %v", peer, err)
		return nil
	}
	cc.c, cc.fd = c, -1
	g, _ := r.clientRoom.enter(c, silent)
	return func() { r.serveClient(ctx, cc, g, start) }
}

// allowed counts the accepted client cc and reports whether the allow list serves it;
// one that it refuses is reset, closed, counted and logged.
func (r *Relay) allowed(cc clientConn) bool {
	r.stats.conns.Accepted()
	if r.cfg.Allow.Allows(cc.peer.Addr()) {
		return true
	}
	r.stats.conns.Refused(connstats.RefusedAllow)
	cc.reset()
	r.strangers.Event(kindClient, connlog.Info, "not in the allow list", prefixOf(cc.peer.Addr()), "refused %s: not in the allow list", cc.peer)
	return false
}

// clientConn is a client on its way to a link: a raw socket (fd) or, where it must wait
// on a goroutine or a TLS link relays it, a *net.TCPConn (c); peer is its address.
type clientConn struct {
	c    *net.TCPConn // nil for a raw socket
	fd   int
	peer netip.AddrPort
}

// addrPortOf is the address and port of a TCP address, IPv4-mapped addresses unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (cc clientConn) close() {
	if cc.c != nil {
		cc.c.Close()
		return
	}
	unix.Close(cc.fd)
}

// reset closes the client with a reset.
func (cc clientConn) reset() {
	if cc.c != nil {
		_ = cc.c.SetLinger(0)
	} else {
		sock.Linger0(cc.fd)
	}
	cc.close()
}

// detach returns the client's socket, taken from the standard library if need be.
func (cc clientConn) detach() (int, error) {
	if cc.c != nil {
		return relay.Detach(cc.c)
	}
	return cc.fd, nil
}

// hello returns the PROXY v1 header that names the client and the address it connected to.
func (cc clientConn) hello() ([]byte, error) {
	if cc.c != nil {
		return helloFor(cc.c)
	}
	local, err := sock.LocalAddr(cc.fd)
	if err != nil {
		return nil, err
	}
	return helloFrom(net.TCPAddrFromAddrPort(cc.peer), net.TCPAddrFromAddrPort(local))
}

// pairOrWait pairs client c, which came at start, with the oldest plain idle link that is
// still alive, without blocking (a send and a post to the link's loop), or else queues it
// in the pool for the next link until its wait ends: so a client costs no goroutine of its
// own. A plain link is put in the pool by the loop that ran its handshake and watches it,
// which then pairs the client with it there (give), with no peek (the link was never idle)
// and no post. here is the loop the caller runs on (nil: a goroutine); a link idle on it
// is paired with no post either.
func (r *Relay) pairOrWait(ctx context.Context, c clientConn, start time.Time, here *relay.Loop) {
	id := r.conns.Add(1)
	client := c.peer.String()
	r.wg.Add(1) // until paired or given up, which Serve waits for
	w := &waiter[*idleLink]{
		deadline: start.Add(r.cfg.Wait),
		give: func(l *idleLink) {
			r.pair(ctx, c, l, id, client, start, true)
			r.wg.Done()
		},
		fail: func(err error) {
			r.noLink(c, id, client, err)
			r.wg.Done()
		},
	}
	for {
		var l *idleLink
		var ok bool
		if r.cfg.Wait > 0 {
			l, ok = r.pool.getOr(w, false)
		} else if l, ok = r.pool.tryGet(); !ok { // --wait 0: no waiting at all
			w.fail(errNoLink)
		}
		if !ok {
			return
		}
		if _, cause := peek(uintptr(l.fd)); cause != nil { // the loop's watch may not have seen it yet
			r.closeLink(l)
			r.cfg.Log.Printf("link #%d down %s: %v", l.id, l.addr, cause)
			continue
		}
		r.pair(ctx, c, l, id, client, start, here != nil && l.loop == here)
		r.wg.Done()
		return
	}
}

// noLink closes client c, number id, that found no link (errNoLink: within its wait), and
// counts and logs it.
func (r *Relay) noLink(c clientConn, id uint64, client string, err error) {
	c.close()
	fail := connstats.FailNoLink
	if !errors.Is(err, errNoLink) {
		fail = connstats.FailCut // the relay stops
	}
	r.stats.conns.Failed(fail)
	if errors.Is(err, errNoLink) {
		why := fmt.Sprintf("no idle link within %v", r.cfg.Wait)
		r.strangers.Event(kindNoLink, connlog.Warning, why, prefixOf(c.peer.Addr()), "failed #%d %s -> link: %s", id, client, why)
	}
}

// serveClient pairs one client with a link and relays them. g is the client's place in
// clientRoom while it waits for its first byte: nil with hellos, or when the byte was
// there at once.
func (r *Relay) serveClient(ctx context.Context, cc clientConn, g *guest, start time.Time) {
	c, client := cc.c, cc.peer.String()
	if g != nil {
		first := r.cfg.Wait
		if first == 0 {
			first = r.cfg.FirstByte
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		err := r.waitFirstByte(c, g, r.clientRoom, first)
		if !stop() {
			err = ctx.Err()
		}
		if !r.clientRoom.leave(g) && err == nil {
			err = errPushedOut(silent)
		}
		if err != nil {
			_ = c.SetLinger(0)
			c.Close()
			r.stats.conns.Refused(connstats.RefusedSilent)
			if ctx.Err() == nil {
				r.strangers.Event(kindSilentClient, connlog.Info, reasonOf(err), g.source, "refused %s: %v", client, err)
			}
			return
		}
	}
	id := r.conns.Add(1)
	l, err := r.takeLink(ctx, start.Add(r.cfg.Wait))
	if err != nil {
		r.noLink(cc, id, client, err)
		return
	}
	r.pair(ctx, cc, l, id, client, start, false)
}

// pair relays client c, number id, with the link l it took. A plain link is paired
// without blocking, on its loop (onLoop: pair runs there already); a TLS link's hello
// write may wait, and its session is relayed on the calling goroutine.
func (r *Relay) pair(ctx context.Context, c clientConn, l *idleLink, id uint64, client string, start time.Time, onLoop bool) {
	r.stats.pairings.Add(1)
	dest := fmt.Sprintf("link #%d %s", l.id, l.addr)
	rw := l.rw // a plain link, or a session on a TLS link
	var sess *linkSession
	if l.fl != nil {
		sess = l.fl.session(ctx)
		rw = sess
	}
	if r.cfg.Hello {
		hello, err := c.hello()
		switch {
		case err != nil:
		case l.fd >= 0: // an idle link's send buffer is empty: the hello fits at once
			var n int
			if n, err = sock.Send(l.fd, hello); err == nil && n < len(hello) {
				err = io.ErrShortWrite
			}
		default:
			_ = rw.SetWriteDeadline(time.Now().Add(r.cfg.HandshakeTimeout))
			_, err = rw.Write(hello)
			_ = rw.SetWriteDeadline(time.Time{})
		}
		if err != nil {
			c.close()
			r.closeLink(l)
			r.stats.conns.Failed(connstats.FailureOf(err))
			r.cfg.Log.Failed(id, client, dest, fmt.Errorf("sending hello: %w", err))
			return
		}
	}
	r.cfg.Log.Open(id, client, dest)
	r.stats.conns.Opened(time.Since(start)) // the wait for a link
	r.wg.Add(1)                             // until the relay's end, which Serve waits for
	done := func(res relay.Result) {
		r.cfg.Log.Close(id, client, dest, uint64(res.Up), uint64(res.Down), res.Duration, res.End)
		r.stats.conns.Ended(connstats.EndOf(res.End))
		r.wg.Done()
	}
	if l.fd >= 0 {
		pairOnLoop(ctx, l.loop, c, l.fd, &r.stats.conns, done, onLoop)
		return
	}
	relayPaired(ctx, r.loops, r.trim, c.c, rw, &r.stats.conns, done) // TLS: a client always has c
	if sess != nil {
		r.relink(ctx, l, sess) // the relay of a session has ended by now (relayPaired)
	}
}

// pairOnLoop relays client and the plain link fd, which loop watches, on that loop, as
// relayPaired does for two connections; done runs on the loop. onLoop: the caller runs on
// loop, which starts the pair at once instead of in a post.
func pairOnLoop(ctx context.Context, loop *relay.Loop, client clientConn, fd int, counts *connstats.Counters, done func(relay.Result), onLoop bool) {
	o := relay.PairOptions{HalfClose: true, OnEnd: done, Progress: counts.Moved}
	cfd, err := client.detach()
	switch {
	case err != nil:
		client.close()
		if onLoop {
			loop.Events().CloseFD(fd)
		} else {
			loop.Post(func() { loop.Events().CloseFD(fd) })
		}
		done(relay.Result{End: "error: " + err.Error(), Err: err})
	case onLoop:
		loop.StartPair(ctx, cfd, fd, o)
	default:
		loop.Post(func() { loop.StartPair(ctx, cfd, fd, o) })
	}
}

// watchOnLoop has the loop watch the plain idle link l, whose socket it has registered
// already (see linkShake); it runs on that loop, with the pool locked (see pool.put). When
// the link becomes readable it is dead, and leaves the pool unless a client has taken it.
func (r *Relay) watchOnLoop(l *idleLink) {
	lp := l.loop.Events()
	lp.Handle(l.fd, func(ev uint32) {
		// Only the events say the link is dead: a look at the socket (a peek) could
		// take a reset's error from a link a client has just taken, whose pair would
		// then read a plain end.
		const dead = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
		if ev&dead == 0 || !r.pool.remove(l) {
			return // writable, or taken: the pair reads what came
		}
		_, cause := peek(uintptr(l.fd))
		if cause == nil {
			cause = errLinkData
		}
		lp.CloseFD(l.fd)
		r.cfg.Log.Printf("link #%d down %s: %v", l.id, l.addr, cause)
	})
}

// relink puts a TLS link whose session is over back in the pool, as a link that came
// back rather than a new one (no line is logged), or closes it when the session left it
// unusable or the pool is full.
func (r *Relay) relink(ctx context.Context, l *idleLink, s *linkSession) {
	var why error
	switch {
	case ctx.Err() != nil:
		why = errors.New("relay stopping")
	case !s.reusable:
		why = s.unusable()
	case !bytes.Equal(l.proved, r.secret.get()):
		why = errors.New("the secret changed") // as Reload closes the idle links
	default:
		why = l.fl.quiet()
		if why == nil {
			why = r.pool.reserve()
		}
	}
	if why != nil {
		if !s.reusable {
			_ = l.conn.SetLinger(0) // in an unknown state: the peer resets its side too
		}
		l.conn.Close()
		r.trim.Released()
		r.cfg.Log.Printf("link #%d down %s: %v", l.id, l.addr, why)
		return
	}
	r.pool.put(l, func(l *idleLink) { r.startWatch(ctx, l) })
}

// closeLink closes an idle link the pool no longer holds: a plain one on its loop.
func (r *Relay) closeLink(l *idleLink) {
	if l.fd >= 0 {
		fd, lp := l.fd, l.loop.Events()
		l.loop.Post(func() { lp.CloseFD(fd) })
		return
	}
	r.stopWatch(l)
	l.conn.Close()
}
