package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/loopdial"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
)

// A plain idle link of connecttwo waits on an event loop, not on a goroutine: the loop
// notices the link taken (its first bytes) or gone, reads a hello, connects to the service
// with a non-blocking connect and starts the relay pair there, as tcp-pf's loops connect.
// The slot goroutine that opened the link only hears the outcome, to open the replacement:
// a client costs connecttwo no goroutine wake-up but that one and no hand-off to a loop.

// errAgentStopping is the end of a taken link that the agent's stop cut before its pair.
var errAgentStopping = errors.New("cut: agent stopping")

// Steps of a loopLink.
const (
	takeIdle    = iota // waiting for the link's first bytes
	takeHello          // the hello has begun
	takeDialing        // connecting to the service
	takeDone           // relayed, failed or ended: the link is the pair's or closed
)

// loopLink is one plain idle link on a loop, from the hand-over to the pair (or its end).
// Its fields are the loop's, but for those set before the hand-over.
type loopLink struct {
	a      *Agent
	ctx    context.Context
	l      *relay.Loop
	lp     *eventloop.Loop
	linkID uint64
	fd     int // the link
	srv    int // the service's socket once connected, or -1
	step   int
	got    []byte // consumed from the link: the handshake's rest, the hello as it comes
	// addrs are the service's addresses to try in order, or addrErr why there are none.
	addrs   []netip.Addr
	addrErr error
	// resolved is when addrs were looked up, and byName whether the service is a name
	// (whose addresses may change while the link waits).
	resolved time.Time
	byName   bool
	service  loopdial.Dial    // the connect to the service ...
	dialCfg  loopdial.Config  // ... and how
	timer    *eventloop.Timer // the hello's deadline
	// client and source name the link's peer, then the client once a hello names it.
	client string
	source netip.Prefix
	// Set once taken.
	id              uint64
	payload, replay []byte
	dialStart       time.Time
	stop            func() bool // ends the watch of ctx
	// done hears once why the link ended idle (nil: it was taken, and its service
	// connection is made or has failed, so the replacement may open).
	done chan error
}

// staleAfter bounds a lookup of the service's name when an earlier answer is there to
// fall back on (see serviceAddrs).
const staleAfter = time.Second

// serviceAddrs resolves the service's addresses for a link about to wait (off the
// client's path), in the order the resolver gives, of the local address's family when
// one is set. Once a lookup has answered, a later one that fails, or takes more than
// staleAfter, gives that answer again (as a DNS cache serves stale answers while it cannot
// reach the name's servers): a resolver that stops answering must not cost the clients a
// service that was there a moment ago, nor hold each of them for the dial timeout. A name
// that no longer exists (NXDOMAIN) is a failure.
func (a *Agent) serviceAddrs(ctx context.Context) ([]netip.Addr, error) {
	ep := a.cfg.Service
	if ip, err := netip.ParseAddr(ep.Host); err == nil {
		if l := a.cfg.Local; l.IsValid() && l.Is4() != ip.Unmap().Is4() {
			return nil, fmt.Errorf("connecting to %s: %w", ep, endpoint.CheckFamily("the local address", l, ep.Host))
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	lookup := a.cfg.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	last := a.serviceAt.Load()
	lctx := ctx
	if last != nil {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, staleAfter)
		defer cancel()
	}
	ips, err := lookup(lctx, ep.Host)
	var de *net.DNSError
	if err != nil && last != nil && ctx.Err() == nil && !(errors.As(err, &de) && de.IsNotFound) {
		return *last, nil
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", ep, err)
	}
	var out []netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		if l := a.cfg.Local; l.IsValid() && l.Is4() != ip.Is4() {
			continue
		}
		out = append(out, ip)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("connecting to %s: no %s address, which the local address %s needs", ep, familyOf(a.cfg.Local), a.cfg.Local)
	}
	a.serviceAt.Store(&out)
	return out, nil
}

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// waitOnLoop hands the plain idle link c (with rest, what its handshake read beyond the
// verdict) to a loop and waits until the link is taken and its service connection made or
// failed (nil), or the link ended idle (why). The link is the loop's from here on.
func (a *Agent) waitOnLoop(ctx context.Context, linkID uint64, c *net.TCPConn, rest []byte) error {
	addrs, addrErr := a.serviceAddrs(ctx)
	remote := c.RemoteAddr()
	fd, err := relay.Detach(c)
	if err != nil {
		c.Close()
		a.idle.add(-1)
		return err
	}
	l := a.loops.Least()
	_, literal := netip.ParseAddr(a.cfg.Service.Host)
	ll := &loopLink{a: a, ctx: ctx, l: l, lp: l.Events(), linkID: linkID, fd: fd, srv: -1,
		got: rest, addrs: addrs, addrErr: addrErr, resolved: time.Now(), byName: literal != nil,
		done:   make(chan error, 1),
		client: fmt.Sprintf("link #%d %s", linkID, remote), source: sourceOf(remote)}
	l.Post(ll.start)
	return <-ll.done
}

// start registers the link on the loop; the end of ctx closes it while it is the loop's.
func (ll *loopLink) start() {
	if err := ll.lp.Add(ll.fd, relay.PairEvents, ll.linkReady); err != nil {
		unix.Close(ll.fd)
		ll.down(err)
		return
	}
	ll.stop = context.AfterFunc(ll.ctx, func() { ll.lp.Post(ll.cut) })
	if len(ll.got) > 0 {
		ll.taken()
	}
}

// down ends an idle link: closed already, it tells the slot why.
func (ll *loopLink) down(err error) {
	ll.step = takeDone
	ll.a.idle.add(-1)
	if ll.stop != nil {
		ll.stop()
	}
	ll.done <- err
}

// cut ends the link when ctx ends before the pair has it.
func (ll *loopLink) cut() {
	switch ll.step {
	case takeIdle:
		ll.lp.CloseFD(ll.fd)
		ll.down(ll.ctx.Err())
	case takeHello, takeDialing:
		ll.fail(errAgentStopping)
	}
}

// linkReady is the link's readiness before the pair takes it over.
func (ll *loopLink) linkReady(ev uint32) {
	switch ll.step {
	case takeIdle:
		var b [1]byte
		n, err := sock.Recv(ll.fd, b[:], unix.MSG_PEEK)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return // writable, or nothing yet
		case err != nil:
			ll.lp.CloseFD(ll.fd)
			ll.down(os.NewSyscallError("read", err))
		case n == 0:
			ll.lp.CloseFD(ll.fd)
			ll.down(errors.New("closed by listentwo"))
		default:
			ll.taken()
		}
	case takeHello:
		ll.readHello()
	}
	// While the service is dialed, the pair, which reads at its start, sees what came.
}

// taken starts serving a link whose first bytes have come.
func (ll *loopLink) taken() {
	a := ll.a
	a.idle.add(-1)
	a.stats.busy.Add(1)
	ll.id = a.conns.Add(1)
	a.stats.conns.Accepted()
	if a.cfg.Hello {
		ll.step = takeHello
		ll.timer = ll.lp.AfterFunc(a.cfg.HandshakeTimeout, func() {
			ll.timer = nil
			ll.fail(errors.New("reading hello: handshake timed out"))
		})
		ll.readHello()
		return
	}
	ll.payload, ll.replay = ll.got, ll.got
	ll.dial()
}

// readHello takes the PROXY v1 header off the link, as readHello does on a goroutine: the
// bytes are peeked and only the header's are consumed, so the client's data after it
// stays in the socket for the relay.
func (ll *loopLink) readHello() {
	for ll.step == takeHello {
		if end := bytes.Index(ll.got, []byte("\r\n")); end >= 0 || len(ll.got) >= maxHello {
			ll.helloDone(end)
			return
		}
		buf := ll.lp.Scratch()[:maxHello-len(ll.got)]
		n, err := sock.Recv(ll.fd, buf, unix.MSG_PEEK)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return // the rest comes with the next event, or the timer fails it
		case err != nil:
			ll.fail(fmt.Errorf("reading hello: %w", err))
			return
		case n == 0:
			ll.fail(errors.New("reading hello: link closed"))
			return
		}
		take := n // consume up to the CRLF, which may begin in got
		if len(ll.got) > 0 && ll.got[len(ll.got)-1] == '\r' && buf[0] == '\n' {
			take = 1
		} else if i := bytes.Index(buf[:n], []byte("\r\n")); i >= 0 {
			take = i + 2
		}
		if k, err := sock.Recv(ll.fd, buf[:take], 0); err != nil || k != take {
			if err == nil {
				err = errors.New("short read")
			}
			ll.fail(fmt.Errorf("reading hello: %w", err))
			return
		}
		ll.got = append(ll.got, buf[:take]...)
	}
}

// helloDone parses the hello that ends at end in got (-1: none within maxHello).
func (ll *loopLink) helloDone(end int) {
	if ll.timer != nil {
		ll.timer.Stop()
		ll.timer = nil
	}
	if end < 0 || end+2 > maxHello {
		ll.fail(fmt.Errorf("hello is not a PROXY v1 header: %q", clip(string(ll.got[:min(len(ll.got), 32)]))))
		return
	}
	raw, rest := ll.got[:end+2], ll.got[end+2:]
	h, err := parseHello(raw)
	if err != nil {
		ll.fail(err)
		return
	}
	ll.client = fmt.Sprintf("%s (link #%d)", h.SourceAddr, ll.linkID)
	ll.source = sourceOf(h.SourceAddr)
	ll.payload, ll.replay = rest, rest
	if ll.a.cfg.SendProxy {
		ll.replay = ll.got
	}
	ll.dial()
}

// dial connects to the service's addresses (loopdial: one family after the other,
// racing after 300 ms, within the dial timeout), failing the client when none connects.
func (ll *loopLink) dial() {
	a := ll.a
	if ll.step != takeDialing {
		ll.step = takeDialing
		ll.dialStart = time.Now()
		if ll.byName && time.Since(ll.resolved) > a.addrsFresh() {
			ll.resolve()
			return
		}
	}
	if ll.addrErr != nil {
		a.stats.conns.AttemptFailed(connstats.FailureOf(ll.addrErr))
		ll.fail(ll.addrErr)
		return
	}
	// A lookup again (resolve) took its time of the timeout.
	ll.dialCfg = loopdial.Config{Timeout: max(a.dialTimeout()-time.Since(ll.dialStart), time.Millisecond), Local: a.cfg.Local}
	ll.service.Start(ll.lp, &ll.dialCfg, ll, ll.addrs, uint16(a.cfg.Service.Port))
}

// resolve looks the service's name up again, off the loop, for a link that waited longer
// than its addresses stay fresh (the name may point elsewhere by now, as a dial at the
// client's arrival would see), then dials. The lookup counts in the dial timeout.
func (ll *loopLink) resolve() {
	a := ll.a
	a.wg.Add(1) // the slot still waits on done: Run's wait has not begun
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(ll.ctx, a.dialTimeout())
		addrs, err := a.serviceAddrs(ctx)
		cancel()
		ll.lp.Post(func() {
			if ll.step != takeDialing || ll.service.Running() {
				return // failed or cut meanwhile
			}
			ll.addrs, ll.addrErr, ll.resolved = addrs, err, time.Now()
			ll.dial()
		})
	}()
}

// addrsFresh is how long a plain idle link keeps the service's addresses it looked up.
const addrsFresh = time.Second

func (a *Agent) addrsFresh() time.Duration {
	if a.cfg.addrsFresh > 0 {
		return a.cfg.addrsFresh
	}
	return addrsFresh
}

// AttemptFailed counts an address of the service that could not be reached.
func (ll *loopLink) AttemptFailed(_ netip.AddrPort, err error, _ time.Duration) time.Duration {
	ll.a.stats.conns.AttemptFailed(connstats.FailureOf(err))
	return 0
}

// Connected takes the service's socket and starts the pair.
func (ll *loopLink) Connected(fd int, _ netip.AddrPort) {
	ll.srv = fd
	ll.connected()
}

// Failed fails the client: no address of the service connected.
func (ll *loopLink) Failed(err error) {
	ll.fail(fmt.Errorf("connecting to %s: %w", ll.a.cfg.Service, err))
}

// connected writes what the service gets first and starts the pair.
func (ll *loopLink) connected() {
	a := ll.a
	if len(ll.replay) > 0 {
		n, err := sock.Send(ll.srv, ll.replay)
		if err == nil && n < len(ll.replay) {
			err = unix.EAGAIN
		}
		if err != nil {
			ll.fail(fmt.Errorf("writing to %s: %w", a.cfg.Service, err))
			return
		}
	}
	ll.step = takeDone
	ll.stop()
	// Counted before the slot hears, so that a stop right after cannot see Run's wait
	// end (the slot was the last) with this pair about to start.
	a.wg.Add(1)    // until the relay's end, which Run waits for
	ll.done <- nil // the replacement may open
	counts := &a.stats.conns
	service := a.cfg.Service.String()
	a.cfg.Log.Open(ll.id, ll.client, service)
	counts.Opened(time.Since(ll.dialStart))
	counts.Up(len(ll.payload))
	id, client, payload := ll.id, ll.client, len(ll.payload)
	ll.l.StartPair(ll.ctx, ll.fd, ll.srv, relay.PairOptions{HalfClose: true, Progress: counts.Moved, OnEnd: func(res relay.Result) {
		up := uint64(res.Up) + uint64(payload)
		a.cfg.Log.Close(id, client, service, up, uint64(res.Down), res.Duration, res.End)
		counts.Ended(connstats.EndOf(res.End))
		a.stats.busy.Add(-1)
		a.wg.Done()
	}})
}

// fail ends a taken link whose service connection could not be made: the link is reset,
// so the client sees its connection end at once, not a hang.
func (ll *loopLink) fail(err error) {
	a := ll.a
	if ll.timer != nil {
		ll.timer.Stop()
		ll.timer = nil
	}
	ll.service.Stop()
	if ll.srv >= 0 {
		ll.lp.CloseFD(ll.srv)
		ll.srv = -1
	}
	sock.Linger0(ll.fd)
	ll.lp.CloseFD(ll.fd)
	ll.step = takeDone
	ll.stop()
	f := connstats.FailureOf(err)
	if ll.ctx.Err() != nil {
		f = connstats.FailCut
	}
	a.stats.conns.Failed(f)
	a.stats.busy.Add(-1)
	if !errors.Is(err, errAgentStopping) {
		a.failed(ll.id, ll.client, ll.source, err)
	}
	ll.done <- nil
}

// dialTimeout bounds the connect to the service, all its addresses together.
func (a *Agent) dialTimeout() time.Duration {
	if a.cfg.DialTimeout > 0 {
		return a.cfg.DialTimeout
	}
	return endpoint.DefaultDialTimeout
}
