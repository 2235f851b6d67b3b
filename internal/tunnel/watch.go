package tunnel

import (
	"errors"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/sock"
)

// Reasons an idle link is found dead.
var (
	errLinkClosed = errors.New("closed by connecttwo")
	errLinkData   = errors.New("connecttwo sent data on an idle link")
)

// peek looks at c's receive queue without consuming it or blocking: nil means nothing
// there (the link is idle and alive), otherwise the reason the link is unusable.
// wouldBlock reports the "nothing there" case, for the caller of raw.Read to wait on.
func peek(fd uintptr) (wouldBlock bool, err error) {
	var b [1]byte
	n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		return true, nil
	case err != nil:
		if errors.Is(err, unix.ECONNRESET) {
			return false, errors.New("reset by connecttwo")
		}
		return false, os.NewSyscallError("recvfrom", err)
	case n == 0:
		return false, errLinkClosed
	default:
		return false, errLinkData
	}
}

// alive checks, without blocking, that an idle link has neither ended nor sent anything:
// the last look before a client is paired with it.
func alive(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var res error
	if cerr := raw.Control(func(fd uintptr) { _, res = peek(fd) }); cerr != nil {
		return cerr
	}
	return res
}

// watchIdle blocks until the idle link c becomes readable (an end, a reset, or unexpected
// data, all of which make it unusable) and returns why, or returns nil when a read deadline
// in the past stops the watch. Nothing is consumed, so a link stopped that way is intact.
func watchIdle(c *net.TCPConn) error {
	res, err := waitPeek(c)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if errors.Is(err, net.ErrClosed) {
			return errors.New("closed by listentwo")
		}
		return err
	}
	return res
}

// waitPeek blocks, holding no buffer and consuming nothing, until c has data or an end to
// read, and returns what peek found then (res); err is what ended the wait otherwise (a
// read deadline, a close).
func waitPeek(c *net.TCPConn) (res, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	err = raw.Read(func(fd uintptr) bool {
		var block bool
		block, res = peek(fd)
		return !block
	})
	return res, err
}

// sendLine sends a handshake line on a loop's raw socket, which takes it whole (a line is
// at most maxLine bytes, far below any socket buffer): a short write is an error.
func sendLine(fd int, b []byte) error {
	n, err := sock.Send(fd, b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return os.NewSyscallError("write", err)
	}
	return nil
}

// setKeepAlive turns on TCP keepalive with probes frequent enough that a link whose peer
// vanished (power loss, a NAT that forgot it) is noticed within about a minute.
func setKeepAlive(c *net.TCPConn) {
	_ = c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 30e9, Interval: 10e9, Count: 3})
}

// Why a peer that had to speak first did not.
var (
	errSilent      = errors.New("sent nothing")
	errClosedEarly = errors.New("closed without sending anything")
)

// waitFirstByte blocks, holding no buffer and consuming nothing, until c has data to read,
// and returns nil then. It returns errSilent when c's read deadline passes first,
// errClosedEarly when the peer ends or resets the connection first, and net.ErrClosed when
// c is closed under it.
func waitFirstByte(c *net.TCPConn) error {
	res, err := waitPeek(c)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errSilent
	case err != nil:
		return err
	case errors.Is(res, errLinkData):
		return nil
	default:
		return errClosedEarly
	}
}

// pending reports whether c has data waiting to be read, without blocking.
func pending(c *net.TCPConn) bool { return len(peekNow(c, 1)) > 0 }

// peekNow returns up to n bytes waiting to be read on c, without consuming them or
// blocking; nothing when none are there (or c has ended).
func peekNow(c *net.TCPConn, n int) []byte {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	b := make([]byte, n)
	got := 0
	if raw.Control(func(fd uintptr) {
		k, _, err := unix.Recvfrom(int(fd), b, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == nil {
			got = k
		}
	}) != nil {
		return nil
	}
	return b[:got]
}

// deferAccept asks the kernel to hand ln's connections to accept only once their first
// data has arrived, or after about a second (TCP_DEFER_ACCEPT): peers that must speak first
// and stay silent wait that long in the kernel's queue of half-open connections, costing
// no descriptor, and do not stand in the accept queue before one that spoke. Those that
// come through silent are what the rooms deal with. A listener that is not TCP, or a
// kernel without the option, just goes without.
func deferAccept(ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
	})
}

// fdPending is pending for the non-blocking socket fd.
func fdPending(fd int) bool {
	var b [1]byte
	n, err := sock.Recv(fd, b[:], unix.MSG_PEEK)
	return err == nil && n > 0
}
