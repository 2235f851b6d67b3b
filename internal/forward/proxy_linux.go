package forward

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/proxyhdr"
	"shd-tcp-tools/internal/sock"
)

// The PROXY protocol on the event loop. With --accept-proxy a new client's socket is
// watched for its header before anything else: each time bytes arrive they are peeked
// (MSG_PEEK) into the loop's buffer, and once proxyhdr.Len finds a whole header exactly
// that many bytes are read, so the client's first bytes stay in the socket for the relay
// to splice. Nothing blocks and no goroutine waits. With --send-proxy the header naming
// the client goes out first, before --insert (as HAProxy sends it before any data).

// headerReader is a loop's buffer and parser for clients' PROXY headers.
type headerReader struct {
	buf    []byte // proxyhdr.MaxLen bytes, made on first use
	parser proxyhdr.Parser
}

// accepted starts the life of a client accepted from sock: at once, or with --accept-proxy
// once its PROXY header is read.
func (c *lconn) accepted(sock netip.AddrPort) {
	c.client = sock
	if !c.s.cfg.AcceptProxy {
		c.begin(sock)
		return
	}
	c.from = sock.String() // until the header names the client
	c.state = stHeader
	// Registered for every event now; they are ignored until the relay starts, which
	// pumps both ways anyway, so connected need not register it again.
	if err := c.ls.lp.Add(c.cfd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET, c.clientReady); err != nil {
		c.refuseHeader(os.NewSyscallError("epoll_ctl", err).Error())
		return
	}
	timeout := orDefault(c.s.cfg.AcceptProxyTimeout, DefaultHeaderTimeout)
	c.timer = c.ls.lp.AfterFunc(timeout, func() {
		c.timer = nil
		c.refuseHeader(fmt.Sprintf("no PROXY protocol header within %v", timeout))
	})
	c.readHeader(0) // it may have come with the connection
}

// readHeader looks at what the client has sent so far (ev: the events that brought it)
// and, once a whole PROXY header is there, consumes exactly it and serves the client it
// names.
func (c *lconn) readHeader(ev uint32) {
	hr := c.ls.header()
	n, err := peek(c.cfd, hr.buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return
	case err != nil:
		c.refuseHeader("reading the PROXY protocol header: " + err.Error())
		return
	case n == 0:
		c.refuseHeader("closed before sending a PROXY protocol header")
		return
	}
	hl, err := proxyhdr.Len(hr.buf[:n])
	switch {
	case err != nil:
		c.refuseHeader(err.Error())
		return
	case hl == 0 && ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0:
		c.refuseHeader("closed in the middle of its PROXY protocol header")
		return
	case hl == 0:
		if f := c.s.partialHeader; f != nil {
			f()
		}
		return // the rest comes with a later event
	}
	if m, err := readFull(c.cfd, hr.buf[:hl]); err != nil || m != hl {
		c.refuseHeader(fmt.Sprintf("reading the PROXY protocol header: got %d of %d bytes peeked (%v)", m, hl, err))
		return
	}
	h, err := hr.parser.Parse(hr.buf[:hl])
	if err != nil {
		c.refuseHeader(err.Error())
		return
	}
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if h.Addressed { // LOCAL, UNKNOWN and other families keep the socket's addresses
		c.client, c.local = h.Source, h.Dest
	}
	c.begin(c.client)
}

// refuseHeader turns away a client whose PROXY header could not be had, and logs why. The
// client is reset: ending it is tcp-pf's decision, never a clean end.
func (c *lconn) refuseHeader(why string) {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.refused(why)
	c.ls.counts.Refused(connstats.RefusedHeader)
	sock.Linger0(c.cfd)
	_ = c.ls.lp.CloseFD(c.cfd)
	c.release()
}

// header returns the loop's header reader.
func (ls *loopState) header() *headerReader {
	if ls.hdr == nil {
		ls.hdr = &headerReader{buf: make([]byte, proxyhdr.MaxLen)}
	}
	return ls.hdr
}

// proxyHeader returns the --send-proxy header for the connection: the client, and the
// address it connected to (the one its own header named, or this socket's).
func (c *lconn) proxyHeader() ([]byte, error) {
	if !c.local.IsValid() {
		a, err := sock.LocalAddr(c.cfd)
		if err != nil {
			return nil, fmt.Errorf("the client's socket: %w", err)
		}
		c.local = a
	}
	return proxyhdr.Format(c.s.cfg.SendProxy, c.client, c.local)
}

// peek reads what fd has received without consuming it.
func peek(fd int, buf []byte) (int, error) { return sock.Recv(fd, buf, unix.MSG_PEEK) }

// readFull reads len(buf) bytes that fd is known to hold (they were peeked).
func readFull(fd int, buf []byte) (int, error) {
	got := 0
	for got < len(buf) {
		n, err := sock.Recv(fd, buf[got:], 0)
		if err != nil {
			return got, err
		}
		if n == 0 {
			return got, errors.New("end of stream")
		}
		got += n
	}
	return got, nil
}
