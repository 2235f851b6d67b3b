package forward

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/accept"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/dnscache"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/loopdial"
	"shd-tcp-tools/internal/ratelimit"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/sock"
)

// The life of a connection in the event-loop engine. Every method runs on the connection's
// loop.
const (
	stResolving  = iota // a name being looked up off the loop
	stConnecting        // a non-blocking connect to targets[next-1] is in flight
	stInserting         // writing --insert to the destination
	stRelaying          // handed to a relay.Pair, until it ends
	stClosed
	stHeader // reading the client's PROXY header (--accept-proxy); see proxy_linux.go
)

const (
	up   = 0 // client to server
	down = 1 // server to client

	endStopped = relay.EndStopped
)

// lconn is one client connection in the event-loop engine, from the accept until its
// sockets are a connected pair: the allow list, the choice of a host (failing over to the
// next address and the next host), the connect, --send-proxy and --insert. Then a
// relay.Pair relays the two sockets until the end, which lconn logs and counts.
type lconn struct {
	ls  *loopState
	s   *Server
	id  uint64
	cfd int
	sfd int // -1 until a connect is started

	from, to string
	start    time.Time
	state    int

	// client is the client's address: the socket's peer, or what its PROXY header named;
	// local is the address it connected to, once known (for --send-proxy).
	client, local netip.AddrPort
	pre           []byte // the --send-proxy header, what is left of it to send

	plan      endpoint.Plan[*hostEntry] // the hosts tried so far, in order, from the server's source
	held      bool                      // the balancer counts this connection open on the current one
	addrs     []netip.Addr              // its addresses (shared with the name cache: read only)
	lit       [1]netip.Addr
	dial      *loopdial.Dial    // the connect to them, from the loop's spares; nil once done
	failure   connstats.Failure // the class of the last failure, for the metrics
	dialStart time.Time         // when the connect in flight began
	timer     *eventloop.Timer  // --insert's stall deadline

	inserted  int
	pace      [2]*ratelimit.Bucket // each direction's rate limit; --insert pays up's
	paceWait  *eventloop.Timer     // --insert waiting for up's tokens (made on first use)
	insertDue bool                 // ... and paceWait is armed

	pair *relay.Pair // while stRelaying
	// serverQuiet: no event of the destination socket has reported input yet (see
	// relay.PairOptions.Quiet).
	serverQuiet bool
}

// refused logs a client turned away; beyond a burst of them in an interval, they are
// counted by reason and client block and summed up in one line (see Server.floods).
func (c *lconn) refused(why string) {
	if c.s.floods.Allow("refused", connlog.Info, why, connlog.Block(c.client.Addr())) {
		c.ls.log.Refused(c.from, why)
	}
}

// logFailed logs a connection to dest that failed; beyond a burst of them for one dest in
// an interval, they are counted by reason and client block and summed up in one line.
func (c *lconn) logFailed(dest string, err error) {
	if c.s.floods.Allow("failed -> "+dest, connlog.Error, err.Error(), connlog.Block(c.client.Addr())) {
		c.ls.log.Failed(c.id, c.from, dest, err)
	}
}

// begin checks the allow list and starts the connection to a destination.
func (c *lconn) begin(client netip.AddrPort) {
	s := c.s
	c.from = client.String()
	if !s.cfg.Allow.Allows(client.Addr()) {
		_ = c.ls.lp.CloseFD(c.cfd) // registered already with --accept-proxy
		c.refused("not in the allow list")
		c.ls.counts.Refused(connstats.RefusedAllow)
		c.release()
		return
	}
	c.id = s.ids.Add(1)
	c.state = stConnecting
	c.dialNext()
}

// nextHost moves on to the next candidate and takes its addresses: an IP literal as it is,
// a name from the cache. It reports false when there are none to try now: the name is
// being looked up (off the loop; Resolved goes on), or no candidate is left (the client
// is reset).
func (c *lconn) nextHost() bool {
	s := c.s
	for {
		if err := c.plan.LastErr(); err != nil && !accept.Shortage(err) {
			if line := s.health.Failed(c.plan.Current().ep, err); line != "" {
				c.ls.log.Warnf("%s", line)
			}
		}
		c.addrs = nil
		if !c.nextCandidate() {
			var why error // each host that failed has a line already; one host says it all
			if c.plan.Failures() == 0 {
				why = connstats.ErrNoHost
			} else if n := len(c.plan.Tried()); n > 1 { // else the lines above read as if tcp-pf were still trying
				c.logFailed("-", fmt.Errorf("all %d hosts failed; the client is reset", n))
			}
			c.resetClient(why)
			return false
		}
		ep := c.plan.Current().ep
		if a, err := netip.ParseAddr(ep.Host); err == nil {
			c.lit[0] = a.Unmap()
			c.addrs = c.lit[:]
			return true
		}
		// Only a host that is tried is looked up, and a cached answer costs no wait.
		ans, ok := s.names.Get(s.network(), ep.Host, c)
		if !ok {
			c.state = stResolving
			return false
		}
		if !c.take(ans) {
			continue
		}
		return true
	}
}

// nextCandidate takes the next host from the server's source (the one destination, or
// the balancer's best not tried yet), moving the connection's open count to it from the
// host tried before. It reports false when every host was tried.
func (c *lconn) nextCandidate() bool {
	c.releaseHost()
	if _, ok := c.plan.Next(c.s.source); !ok {
		return false
	}
	c.held = c.s.bal != nil // the balancer's pick counted it open
	return true
}

// releaseHost ends the balancer's count of this connection on its host.
func (c *lconn) releaseHost() {
	if c.held {
		c.s.bal.release(c.plan.Current())
		c.held = false
	}
}

// take takes the addresses of a lookup for the current candidate, or logs why there are
// none and reports false.
func (c *lconn) take(ans dnscache.Answer) bool {
	if ans.Err != nil {
		c.failed(ans.Err)
		return false
	}
	c.addrs = ans.Addrs
	return true
}

// Resolved is told the answer of the lookup the connection waits for, off the loop, and
// goes on on the loop.
func (c *lconn) Resolved(ans dnscache.Answer) {
	c.ls.lp.Post(func() {
		if c.state != stResolving { // stopped meanwhile
			return
		}
		c.state = stConnecting
		if c.take(ans) {
			c.dialHost()
			return
		}
		c.dialNext()
	})
}

// dialNext moves on to the next candidate and connects to it; when none is left the
// client is reset.
func (c *lconn) dialNext() {
	if c.nextHost() {
		c.dialHost()
	}
}

// dialHost connects to the current candidate's addresses (see loopdial: one family after
// the other, racing after 300 ms, within --connect-timeout).
func (c *lconn) dialHost() {
	c.dialStart = c.ls.lp.Now()
	if c.dial == nil {
		c.dial = c.ls.takeDial()
	}
	c.dial.Start(c.ls.lp, &c.ls.e.dialer, c, c.addrs, uint16(c.plan.Current().ep.Port))
}

// AttemptFailed logs an address of the current candidate that could not be reached. A
// socket that found no descriptor or memory is not a failure while time is left: the
// client stays connected and waits, accepting pauses, and the same address is tried again
// after the back-off.
func (c *lconn) AttemptFailed(_ netip.AddrPort, err error, left time.Duration) time.Duration {
	if accept.Shortage(err) {
		if wait := max(c.s.back.Pause(c.s.cfg.now()), accept.MinPause); wait < left {
			c.s.shorted(c.ls.log, err)
			c.ls.pause()
			return wait
		}
	}
	c.failed(err)
	return 0
}

// endDial stops the connect in flight, if any, and gives its Dial back to the loop, so
// that a connection holds none while it relays.
func (c *lconn) endDial() {
	if c.dial != nil {
		c.dial.Stop()
		c.ls.spareDials = append(c.ls.spareDials, c.dial)
		c.dial = nil
	}
}

// Connected takes the destination socket and logs the open.
func (c *lconn) Connected(fd int, _ netip.AddrPort) {
	c.serverQuiet = !c.dial.Input()
	c.endDial() // the Dial's last word: nothing of it runs after this
	c.sfd = fd
	c.connected()
}

// Failed moves on to the next candidate once every address of this one failed.
func (c *lconn) Failed(err error) {
	if c.plan.LastErr() == nil { // no attempt was made: say why
		c.failed(err)
	}
	c.dialNext()
}

// resetClient ends a connection that never reached a destination: the client is reset, so
// that it knows it was not served, and why, when not nil, is logged.
func (c *lconn) resetClient(why error) {
	c.endDial()
	c.releaseHost()
	fail := c.failure // every host failed: the class of the last failure
	if why != nil {
		fail = connstats.FailureOf(why)
	}
	c.ls.counts.Failed(fail)
	if why != nil {
		dest := "-" // every host failed, and each has its line already
		if c.plan.Trying() && !c.plan.Ended() {
			dest = c.plan.Current().ep.String() // cut while this one was tried
		}
		c.logFailed(dest, why)
	}
	sock.Linger0(c.cfd)
	_ = c.ls.lp.CloseFD(c.cfd)
	c.release()
}

// release ends the connection's life in its loop and in the server.
func (c *lconn) release() {
	c.state = stClosed
	delete(c.ls.conns, c)
	c.s.done()
}

// failed logs an address of the current candidate that could not be reached, or a name
// that gave none.
func (c *lconn) failed(err error) {
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall == "connect" {
		err = se.Err // "connection refused": the line names the address already
	}
	c.plan.Failed(err)
	c.failure = connstats.FailureOf(err)
	c.ls.counts.AttemptFailed(c.failure)
	c.logFailed(c.plan.Current().ep.String(), err)
	if accept.Shortage(err) {
		c.s.shorted(c.ls.log, err)
		c.ls.pause()
	}
}

// serverReady handles the destination socket's events from the connect to the relay.
func (c *lconn) serverReady(ev uint32) {
	if c.state == stInserting && ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.insertMore()
	}
}

// clientReady handles the client socket's events until the relay takes it over: its
// PROXY header; what comes later is the relay's, which pumps both ways when it starts.
func (c *lconn) clientReady(ev uint32) {
	if c.state == stHeader {
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.readHeader(ev)
		}
	}
}

// connected logs the open and moves on to --insert or the relay.
func (c *lconn) connected() {
	s := c.s
	if line := s.health.OK(c.plan.Current().ep); line != "" {
		c.ls.log.Warnf("%s", line)
	}
	if line := s.back.OK(); line != "" {
		c.ls.log.Warnf("%s", line)
	}
	c.to = c.plan.Current().ep.String()
	c.ls.log.Open(c.id, c.from, c.to)
	c.ls.counts.Opened(c.ls.lp.Now().Sub(c.dialStart))
	c.ls.keepAliveLater(c)
	// Without --accept-proxy the client's socket joins the loop's epoll set with the relay
	// (relay.StartPair), which can then take its first read as the answer to an event.
	c.start = c.ls.lp.Now() // the close line's time and rates count from the open
	c.pace = [2]*ratelimit.Bucket{ratelimit.NewBucket(s.cfg.Rate), ratelimit.NewBucket(s.cfg.Rate)}
	if s.cfg.SendProxy != 0 {
		pre, err := c.proxyHeader()
		if err != nil {
			c.endSetup("error: " + err.Error())
			return
		}
		c.pre = pre
	}
	if len(s.cfg.Insert) == 0 && len(c.pre) == 0 {
		c.startRelay()
		return
	}
	c.state = stInserting
	c.serverQuiet = false                // serverReady takes its events, input or not
	c.ls.lp.Handle(c.sfd, c.serverReady) // the dial's until now; the pair takes it over next
	c.insertMore()
}

// insertMore writes what is left of the --send-proxy header, then of --insert, paying the
// up direction's rate limit for the insert like relayed bytes; the relay starts once all
// of it is out. The destination may take no byte of it for at most the connect timeout at
// a time.
func (c *lconn) insertMore() {
	for len(c.pre) > 0 {
		n, ok := c.sendFirst(c.pre, "sending the PROXY protocol header")
		if !ok {
			return
		}
		c.pre = c.pre[n:]
	}
	ins := c.s.cfg.Insert
	pace := c.pace[up]
	for !c.insertDue && c.inserted < len(ins) {
		n, delay := pace.Reserve(c.ls.lp.Now(), len(ins)-c.inserted)
		if delay > 0 {
			c.insertLater(delay)
			return
		}
		n, ok := c.sendFirst(ins[c.inserted:c.inserted+n], "sending the inserted data")
		if !ok {
			return
		}
		c.inserted += n
		c.ls.counts.Up(n)
		pace.Used(n)
	}
	if c.inserted == len(ins) && !c.insertDue {
		c.startRelay()
	}
}

// insertLater writes the --insert data on after delay, once the rate limit allows.
func (c *lconn) insertLater(delay time.Duration) {
	c.insertDue = true
	if c.paceWait != nil {
		c.paceWait.Reset(delay)
		return
	}
	c.paceWait = c.ls.lp.AfterFunc(delay, func() {
		c.insertDue = false
		if c.state == stInserting {
			c.insertMore()
		}
	})
}

// sendFirst writes some of b, which goes to the destination before the relay (doing says
// what it is), and returns how much went. It returns false when the caller must stop: the
// destination takes nothing now (the stall timer runs until it does), or the connection
// ended on an error.
func (c *lconn) sendFirst(b []byte, doing string) (int, bool) {
	n, err := sock.Send(c.sfd, b)
	switch {
	case errors.Is(err, unix.EAGAIN):
		c.stalled(doing)
		return 0, false
	case err != nil:
		c.endSetup("error: " + doing + ": " + err.Error())
		return 0, false
	}
	if c.timer != nil { // it moved: the stall, if any, is over
		c.timer.Stop()
		c.timer = nil
	}
	return n, true
}

// stalled starts the connect timeout, unless it runs already, for a destination that takes
// no byte of what goes before the relay: doing is what was being sent.
func (c *lconn) stalled(doing string) {
	if c.timer == nil {
		c.timer = c.ls.lp.AfterFunc(orDefault(c.s.cfg.ConnectTimeout, DefaultConnectTimeout), func() {
			c.timer = nil
			c.endSetup("error: " + doing + ": i/o timeout")
		})
	}
}

// endSetup ends a connection that was opened but never relayed: both sockets are reset,
// since the end is tcp-pf's decision.
func (c *lconn) endSetup(end string) {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if c.paceWait != nil {
		c.paceWait.Stop()
	}
	sock.Linger0(c.cfd)
	sock.Linger0(c.sfd)
	_ = c.ls.lp.CloseFD(c.cfd)
	_ = c.ls.lp.CloseFD(c.sfd)
	c.ended(relay.Result{End: end})
}

// startRelay hands both sockets to a relay.Pair on the loop.
func (c *lconn) startRelay() {
	cfg := &c.s.cfg
	o := relay.PairOptions{
		HalfClose:   cfg.Lazy,
		Pace:        c.pace,
		IdleTimeout: cfg.IdleTimeout,
		OnEnd:       c.ended,
		NoPipes:     c.s.noPipes,
		Quiet:       [2]bool{down: c.serverQuiet},
		Progress:    c.ls.counted, // the bytes each way, as they move, for the metrics
	}
	if b := c.s.bal; b != nil {
		host, counted := c.plan.Current(), c.ls.counted
		o.Progress = func(up bool, n int64) {
			counted(up, n)
			b.add(host, n)
		}
	}
	c.state = stRelaying // before the start: the pair may end in it
	p, err := relay.StartPair(c.ls.lp, c.cfd, c.sfd, o)
	if err != nil {
		c.endSetup("error: " + err.Error())
		return
	}
	c.pair = p
}

// abort ends the connection now: a stop, a cut or the idle timeout.
func (c *lconn) abort(end string) {
	switch c.state {
	case stHeader:
		c.refuseHeader(end + " before its PROXY protocol header came")
	case stResolving, stConnecting:
		c.resetClient(errors.New(end))
	case stInserting:
		c.endSetup(end)
	case stRelaying:
		c.pair.Abort(end)
	}
}

// ended logs the close of a connection that was opened, with its sockets closed, and
// settles its counts: res is the relay's, or empty when it never started.
func (c *lconn) ended(res relay.Result) {
	dur := c.ls.lp.Now().Sub(c.start)
	c.ls.log.Close(c.id, c.from, c.to, uint64(res.Up)+uint64(c.inserted), uint64(res.Down), dur, res.End)
	if res.Spliced > 0 {
		c.s.spliced.Add(res.Spliced)
	}
	if b := c.s.bal; b != nil {
		b.add(c.plan.Current(), int64(c.inserted))
		c.releaseHost()
	}
	// Counted once the host is released: a scrape that sees the end sees it everywhere.
	c.ls.counts.Ended(connstats.EndOf(res.End))
	c.release()
}
