package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/loopdial"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
)

// A plain link of connecttwo lives on an event loop, not on a goroutine: the loop opens it
// (dial.go), notices it taken (its first bytes) or gone, reads a hello, connects to the
// service with a non-blocking connect and starts the relay pair there, as tcp-pf's loops
// connect. Its slot (loopSlot) hears the outcome on the same loop and opens the
// replacement there: a client costs connecttwo no goroutine wake-up and no hand-off.

// errAgentStopping is the end of a taken link that the agent's stop cut before its pair.
var errAgentStopping = errors.New("cut: agent stopping")

// Steps of a loopLink.
const (
	linkConnecting = iota // connecting to the relay
	linkShaking           // the opening sent: the handshake runs
	takeIdle              // waiting for the link's first bytes
	takeHello             // the hello has begun
	takeDialing           // connecting to the service
	takeDone              // relayed, failed or ended: the link is the pair's or closed
)

// loopLink is one plain link on a loop, from its connect to the pair (or its end). Its
// fields are the loop's, but for those set before it was posted there.
type loopLink struct {
	a      *Agent
	ctx    context.Context
	l      *relay.Loop
	lp     *eventloop.Loop
	linkID uint64
	fd     int // the link, or -1 before it is connected
	srv    int // the service's socket once connected, or -1
	step   int
	// The link's open: the relay's addresses, the connect to the relay (then the same
	// Dial connects to the service) and how, the handshake's machine.
	relayAddrs []netip.Addr
	conn       loopdial.Dial
	dialCfg    loopdial.Config
	shake      clientShake
	relay      netip.AddrPort // the relay's address the link is connected to
	up         time.Time      // when the verdict came
	addr       string         // "LOCAL -> RELAY" for the link's log lines; "" when they are not logged
	got        []byte         // consumed from the link: the handshake's rest, the hello as it comes
	// addrs are the service's addresses to try in order, or addrErr why there are none.
	addrs   []netip.Addr
	addrErr error
	// resolved is when addrs were looked up, and byName whether the service is a name
	// (whose addresses may change while the link waits).
	resolved time.Time
	byName   bool
	timer    *eventloop.Timer // the handshake's or the hello's deadline
	// helloSrc is the client a hello named, if any (see clientName).
	helloSrc net.Addr
	// Set once taken.
	id              uint64
	payload, replay []byte
	dialStart       time.Time
	stop            func() bool // ends the watch of ctx
	// ended is told once, on the loop, how the link ended for its slot: failed to open,
	// ended idle, or taken (the replacement may open: see replace).
	ended    func(linkEnd)
	replaced bool
	short    bool // taken hot, leaving no link idle: the pool grows (see hotTake)
	hot      bool // the link is being taken by the bytes that came with its verdict
}

// linkEnd is how a plain link ended for its slot.
type linkEnd struct {
	up   bool      // it passed its handshake, at at, with the addresses addr
	at   time.Time //
	addr string    //
	err  error     // why it failed to open or ended idle; nil: it was taken
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
	lookup := a.cfg.lookup
	if lookup == nil {
		lookup = lookupIP
	}
	return a.addrsOf(ctx, a.cfg.Service, lookup, &a.serviceAt, &a.serviceSlow)
}

// relayAddrs resolves the relay's addresses for a plain link about to open, as a dial
// would: every link looks a name up again, and a failed lookup fails the link.
func (a *Agent) relayAddrs(ctx context.Context) ([]netip.Addr, error) {
	return a.addrsOf(ctx, a.cfg.Relay, lookupIP, nil, &a.relaySlow)
}

// lookupPatience is how long a lookup with no earlier answer to fall back on may take
// before connecttwo says that it waits for the resolver.
const lookupPatience = time.Second

// slowLookup says once that lookups of a name wait for the resolver: when one has had no
// answer for lookupPatience, and then not again, whatever the slots and their retries
// look up meanwhile, until a lookup of the name answers. A resolver that never answers
// holds each lookup for resolv.conf's timeouts (10 s by default), which the user would
// otherwise sit through without a line.
type slowLookup struct {
	what string // the relay, the service
	said atomic.Bool
}

// watch starts watching one lookup of ep; the returned func ends it, told whether the
// lookup answered.
func (s *slowLookup) watch(log *connlog.Logger, ep endpoint.Endpoint) func(answered bool) {
	t := time.AfterFunc(lookupPatience, func() {
		if s.said.CompareAndSwap(false, true) {
			log.Warnf("looking up %s (%s) takes more than %v: waiting for the resolver; links to it open once it answers, and a lookup that fails is retried with the backoff", ep.Host, s.what, lookupPatience)
		}
	})
	return func(answered bool) {
		t.Stop()
		if answered && s.said.CompareAndSwap(true, false) {
			log.Printf("looked up %s (%s): the resolver answers", ep.Host, s.what)
		}
	}
}

func lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// addrsOf resolves ep's addresses with lookup (see serviceAddrs); last, when not nil,
// keeps the last answer to serve stale; slow says when a lookup with no answer to fall
// back on waits for the resolver.
func (a *Agent) addrsOf(ctx context.Context, ep endpoint.Endpoint, lookup func(context.Context, string) ([]netip.Addr, error), lastAt *atomic.Pointer[[]netip.Addr], slow *slowLookup) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(ep.Host); err == nil {
		if l := a.cfg.Local; l.IsValid() && l.Is4() != ip.Unmap().Is4() {
			return nil, fmt.Errorf("connecting to %s: %w", ep, endpoint.CheckFamily("the local address", l, ep.Host))
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	var last *[]netip.Addr
	if lastAt != nil {
		last = lastAt.Load()
	}
	lctx := ctx
	done := func(bool) {}
	if last != nil {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, staleAfter)
		defer cancel()
	} else {
		done = slow.watch(a.cfg.Log, ep)
	}
	ips, err := lookup(lctx, ep.Host)
	done(err == nil)
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
	if lastAt != nil {
		lastAt.Store(&out)
	}
	return out, nil
}

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// clientName names the link's client for log lines: the link and its relay, or the
// client a hello named and the link. Made only for a line that is written.
func (ll *loopLink) clientName() string {
	if ll.helloSrc != nil {
		return fmt.Sprintf("%s (link #%d)", ll.helloSrc, ll.linkID)
	}
	return fmt.Sprintf("link #%d %s", ll.linkID, ll.relay)
}

// sourceOf is where the link's client comes from, for the summaries of failures: the
// client a hello named, or the relay.
func (ll *loopLink) sourceOf() netip.Prefix {
	if ll.helloSrc != nil {
		return sourceOf(ll.helloSrc)
	}
	return sourceOf(net.TCPAddrFromAddrPort(ll.relay))
}

// stopTimer stops the step's timer, if any.
func (ll *loopLink) stopTimer() {
	if ll.timer != nil {
		ll.timer.Stop()
		ll.timer = nil
	}
}

// down ends an idle link: closed already, it tells the slot why.
func (ll *loopLink) down(err error) {
	ll.stopTimer()
	ll.step = takeDone
	ll.a.idle.add(-1)
	ll.stop()
	ll.ended(ll.end(err))
}

// end is how the link ended, err nil when it was taken.
func (ll *loopLink) end(err error) linkEnd {
	return linkEnd{up: true, at: ll.up, addr: ll.addr, err: err}
}

// cut ends the link when ctx ends before the pair has it.
func (ll *loopLink) cut() {
	switch ll.step {
	case linkConnecting, linkShaking:
		ll.openFailed(ll.ctx.Err())
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
	case linkShaking:
		ll.handshake()
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
	ll.stopTimer() // the idle link's trim
	ll.short = a.idle.add(-1) == 0 && (ll.hot || time.Since(ll.up) < hotTake)
	a.stats.busy.Add(1)
	ll.id = a.conns.Add(1)
	a.stats.conns.Accepted()
	a.wg.Add(1) // until the pair has the link or it failed (connected, fail), which Run waits for
	if a.cfg.Hello {
		ll.step = takeHello
		ll.timer = ll.lp.AfterFunc(a.cfg.HandshakeTimeout, func() {
			ll.timer = nil
			ll.fail(errors.New("reading hello: handshake timed out"))
		})
		ll.readHello()
	} else {
		ll.payload, ll.replay = ll.got, ll.got
		ll.dial()
		ll.replace()
	}
}

// hotTake is how soon after its verdict a link must be taken, leaving no other idle, for
// the pool to grow (grow): the relay pairs a client that waited for a link the moment the
// link joins its pool, and that client's first bytes (or its hello) follow the verdict on
// the same path, within microseconds however far the relay is; a link that waited idle
// until a client came found the pool big enough. Bytes that came in the verdict's read
// take the link hot whatever the clock says (a loop that was preempted is no sign).
const hotTake = time.Millisecond

// replace has the slot open the link's replacement, once: when the service's connect is
// under way (beside it: neither waits for the other), or when the taken link failed; and
// one more link beyond Pool (grow) when the take left no other link idle.
func (ll *loopLink) replace() {
	if !ll.replaced {
		ll.replaced = true
		ll.ended(ll.end(nil))
		if ll.short {
			ll.a.grow(ll.ctx, ll.l)
		}
	}
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
	ll.helloSrc = h.SourceAddr
	ll.payload, ll.replay = rest, rest
	if ll.a.cfg.SendProxy {
		ll.replay = ll.got
	}
	ll.dial()
	ll.replace()
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
	ll.conn.Start(ll.lp, &ll.dialCfg, ll, ll.addrs, uint16(a.cfg.Service.Port))
}

// AttemptFailed counts an address of the service that could not be reached (one of the
// relay's is told in the link's end).
func (ll *loopLink) AttemptFailed(_ netip.AddrPort, err error, _ time.Duration) time.Duration {
	if ll.step == takeDialing {
		ll.a.stats.conns.AttemptFailed(connstats.FailureOf(err))
	}
	return 0
}

// Connected takes the connected socket: the link's, whose handshake starts, or the
// service's, whose pair starts.
func (ll *loopLink) Connected(fd int, addr netip.AddrPort) {
	if ll.step == linkConnecting {
		ll.linkConnected(fd, addr)
		return
	}
	ll.srv = fd
	ll.connected()
}

// Failed ends the link (no address of the relay connected) or fails the client (none of
// the service's).
func (ll *loopLink) Failed(err error) {
	if ll.step == linkConnecting {
		ll.linkConnectFailed(err)
		return
	}
	ll.fail(fmt.Errorf("connecting to %s: %w", ll.a.cfg.Service, err))
}

// resolve looks the service's name up again, off the loop, for a link that waited longer
// than its addresses stay fresh (the name may point elsewhere by now, as a dial at the
// client's arrival would see), then dials. The lookup counts in the dial timeout.
func (ll *loopLink) resolve() {
	a := ll.a
	a.wg.Add(1) // the link holds one already (taken): Run's wait has not ended
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(ll.ctx, a.dialTimeout())
		addrs, err := a.serviceAddrs(ctx)
		cancel()
		ll.lp.Post(func() {
			if ll.step != takeDialing || ll.conn.Running() {
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
	// The link's count in a.wg (taken) is the pair's from here: until the relay's end,
	// which Run waits for.
	counts := &a.stats.conns
	service, client := a.serviceName, "" // the open and close lines' names, when they are logged
	if a.cfg.Log.Enabled(connlog.Info) {
		client = ll.clientName()
	}
	a.cfg.Log.Open(ll.id, client, service)
	counts.Opened(time.Since(ll.dialStart))
	counts.Up(len(ll.payload))
	id, payload := ll.id, len(ll.payload)
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
	ll.stopTimer()
	ll.conn.Stop()
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
		a.failed(ll.id, ll.clientName(), ll.sourceOf(), err)
	}
	ll.replace()
	a.wg.Done() // the count taken made
}

// dialTimeout bounds the connect to the service, all its addresses together (and to the
// relay: a plain link's).
func (a *Agent) dialTimeout() time.Duration {
	if a.cfg.DialTimeout > 0 {
		return a.cfg.DialTimeout
	}
	return endpoint.DefaultDialTimeout
}
