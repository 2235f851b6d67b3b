package tunnel

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/relay"
)

// Defaults of listentwo's limits.
const (
	// DefaultWait is how long a client waits for an idle link (--wait).
	DefaultWait = 30 * time.Second
	// DefaultMaxLinks caps the idle links the relay keeps (--max-links).
	DefaultMaxLinks = 64
	// DefaultMaxHandshakes caps the links in handshake at once; more are closed at once.
	DefaultMaxHandshakes = 64
)

// RelayConfig is listentwo's configuration. Build it from flags, check it with Validate,
// then hand it to NewRelay.
type RelayConfig struct {
	// Clients is where clients connect (-s); Links is where connecttwo's links connect (-d).
	// An empty Host listens on every address, or on Local when it is set.
	Clients, Links endpoint.Endpoint
	// Local is the INADDR_DEFAULT address, or the zero Addr.
	Local netip.Addr
	// Hello sends each taken link a PROXY v1 header naming the client (--hello-dst).
	Hello bool
	// Allow is the client allow list (-a); nil or empty serves everyone.
	Allow *allow.List
	// Wait is how long a client waits for an idle link (--wait); zero: not at all.
	Wait time.Duration
	// Secret, when set, is the shared secret every link must prove (--secret-file).
	Secret []byte
	// MaxLinks caps the idle pool (--max-links); zero means DefaultMaxLinks.
	MaxLinks int
	// MaxHandshakes caps the links in handshake at once; zero means DefaultMaxHandshakes.
	MaxHandshakes int
	// HandshakeTimeout bounds a link's handshake; zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Log receives one line per event; nil discards them.
	Log *connlog.Logger
	// Rand is the nonce source; nil means crypto/rand.
	Rand io.Reader
}

// Validate reports a configuration no relay can run with, as a cli.UsageError.
func (c *RelayConfig) Validate() error {
	switch {
	case c.Clients.Port < 1 || c.Clients.Port > 65535:
		return cli.Usagef("-s: missing or bad port; give [ADDR:]PORT")
	case c.Links.Port < 1 || c.Links.Port > 65535:
		return cli.Usagef("-d: missing or bad port; give [ADDR:]PORT")
	case c.Clients == c.Links:
		return cli.Usagef("-s and -d are the same address %s", c.Clients)
	case c.Wait < 0:
		return cli.Usagef("--wait must not be negative")
	case c.MaxLinks < 0:
		return cli.Usagef("--max-links must be at least 1")
	case c.MaxHandshakes < 0:
		return cli.Usagef("the handshake limit must be at least 1")
	case c.HandshakeTimeout < 0:
		return cli.Usagef("the handshake timeout must not be negative")
	case c.Secret != nil && len(c.Secret) == 0:
		return cli.Usagef("--secret-file: the secret is empty")
	}
	return nil
}

// Relay is listentwo's engine: it accepts clients and links, pools the links that pass the
// handshake, pairs each client with the oldest idle link, and relays the two.
type Relay struct {
	cfg   RelayConfig
	pool  *pool[*idleLink]
	slots chan struct{} // one token per link in handshake

	conns, links atomic.Uint64 // ids for log lines
	wg           sync.WaitGroup
}

// idleLink is a link that passed the handshake and waits in the pool. While idle, a watcher
// goroutine blocks until it becomes readable, which only happens when it dies.
type idleLink struct {
	id    uint64
	conn  *net.TCPConn
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
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Relay{
		cfg:   cfg,
		pool:  newPool[*idleLink](cfg.MaxLinks),
		slots: make(chan struct{}, cfg.MaxHandshakes),
	}, nil
}

// ListenAndServe opens the client and link listeners and serves until ctx ends.
func (r *Relay) ListenAndServe(ctx context.Context) error {
	clients, err := endpoint.Listen(ctx, r.cfg.Clients, r.cfg.Local)
	if err != nil {
		return err
	}
	links, err := endpoint.Listen(ctx, r.cfg.Links, r.cfg.Local)
	if err != nil {
		clients.Close()
		return err
	}
	r.cfg.Log.Printf("listening for clients on %s and for links on %s", clients.Addr(), links.Addr())
	return r.Serve(ctx, clients, links)
}

// Serve accepts clients on clients and links on links until ctx ends or a listener fails,
// then closes both listeners, ends every relay and idle link, waits for its goroutines,
// and returns nil after a cancelled ctx. Both listeners must yield *net.TCPConn.
func (r *Relay) Serve(ctx context.Context, clients, links net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		clients.Close()
		links.Close()
	})
	defer stop()

	errs := make(chan error, 2)
	var accepting sync.WaitGroup
	accepting.Add(2)
	go func() {
		defer accepting.Done()
		errs <- r.accept(ctx, clients, "client", r.serveClient)
	}()
	go func() {
		defer accepting.Done()
		errs <- r.accept(ctx, links, "link", r.serveLink)
	}()
	err := <-errs
	cancel()
	accepting.Wait()
	// The cancelled ctx ends every handshake, wait, relay and idle-link watch.
	r.wg.Wait()
	for _, l := range r.pool.drain() {
		r.stopWatch(l)
		l.conn.Close()
		r.cfg.Log.Printf("link #%d down %s: relay stopping", l.id, l.addr)
	}
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// IdleLinks returns the number of links waiting in the pool.
func (r *Relay) IdleLinks() int { return r.pool.len() }

// WaitingClients returns the number of clients waiting for a link.
func (r *Relay) WaitingClients() int { return r.pool.waiting() }

// WaitIdle waits until the pool holds exactly n idle links, or ctx ends.
func (r *Relay) WaitIdle(ctx context.Context, n int) error {
	return r.pool.waitUntil(ctx, func(k, _ int) bool { return k == n })
}

// accept runs serve on each connection ln accepts, until ln fails for good.
func (r *Relay) accept(ctx context.Context, ln net.Listener, what string, serve func(context.Context, *net.TCPConn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: pause, then go on.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				r.cfg.Log.Printf("accepting %s: %v; retrying in %v", what, err, delay)
				if !sleep(ctx, delay) {
					return net.ErrClosed
				}
				continue
			}
			if ctx.Err() != nil {
				return net.ErrClosed
			}
			return fmt.Errorf("accepting %ss: %w", what, err)
		}
		delay = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			return fmt.Errorf("accepting %ss: %T is not a TCP connection", what, c)
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			serve(ctx, tc)
		}()
	}
}

func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// serveLink runs the handshake on a new link and pools it.
func (r *Relay) serveLink(ctx context.Context, c *net.TCPConn) {
	id := r.links.Add(1)
	addr := c.RemoteAddr().String()
	select {
	case r.slots <- struct{}{}:
	default:
		c.SetLinger(0)
		c.Close()
		r.cfg.Log.Printf("link #%d refused %s: %d links already in handshake", id, addr, cap(r.slots))
		return
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err := serverHandshake(c, linkParams{
		hello: r.cfg.Hello, secret: r.cfg.Secret, rand: r.cfg.Rand, timeout: r.cfg.HandshakeTimeout,
	}, r.pool.reserve, r.pool.unreserve)
	<-r.slots
	if !stop() || err != nil {
		c.Close()
		if err != nil && ctx.Err() == nil {
			r.cfg.Log.Printf("link #%d refused %s: %v", id, addr, err)
		}
		if err == nil {
			r.pool.unreserve()
		}
		return
	}
	// Accepted connections already have the net package's keepalive (15 s), which is
	// enough on this side: connecttwo probes more often (see setKeepAlive).
	l := &idleLink{id: id, conn: c, addr: addr}
	r.pool.put(l, func(l *idleLink) { r.startWatch(ctx, l) })
	r.cfg.Log.Printf("link #%d up %s", id, addr)
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

// takeLink returns the oldest idle link that is still alive, waiting up to the configured
// wait. Dead links it meets on the way are closed and logged.
func (r *Relay) takeLink(ctx context.Context) (*idleLink, error) {
	deadline := time.Now().Add(r.cfg.Wait)
	front := false
	for {
		l, err := r.pool.get(ctx, time.Until(deadline), front)
		if err != nil {
			return nil, err
		}
		cause := r.stopWatch(l)
		if cause == nil {
			cause = alive(l.conn)
		}
		if cause == nil {
			return l, nil
		}
		l.conn.Close()
		r.cfg.Log.Printf("link #%d down %s: %v", l.id, l.addr, cause)
		front = true
	}
}

// serveClient pairs one client with a link and relays them.
func (r *Relay) serveClient(ctx context.Context, c *net.TCPConn) {
	client := c.RemoteAddr().String()
	if !r.cfg.Allow.AllowsConn(c) {
		c.SetLinger(0)
		c.Close()
		r.cfg.Log.Refused(client, "not in the allow list")
		return
	}
	id := r.conns.Add(1)
	l, err := r.takeLink(ctx)
	if err != nil {
		c.Close()
		if errors.Is(err, errNoLink) {
			r.cfg.Log.Failed(id, client, "link", fmt.Errorf("no idle link within %v", r.cfg.Wait))
		}
		return
	}
	dest := fmt.Sprintf("link #%d %s", l.id, l.addr)
	if r.cfg.Hello {
		hello, err := helloFor(c)
		if err == nil {
			_ = l.conn.SetWriteDeadline(time.Now().Add(r.cfg.HandshakeTimeout))
			_, err = l.conn.Write(hello)
			_ = l.conn.SetWriteDeadline(time.Time{})
		}
		if err != nil {
			c.Close()
			l.conn.Close()
			r.cfg.Log.Failed(id, client, dest, fmt.Errorf("sending hello: %w", err))
			return
		}
	}
	r.cfg.Log.Open(id, client, dest)
	res := relay.Join(ctx, c, l.conn, relay.Options{HalfClose: true})
	r.cfg.Log.Close(id, client, dest, uint64(res.Up), uint64(res.Down), res.Duration, res.End)
}
