package tunnel

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
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
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var res error
	err = raw.Read(func(fd uintptr) bool {
		var block bool
		block, res = peek(fd)
		return !block
	})
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

// setKeepAlive turns on TCP keepalive with probes frequent enough that a link whose peer
// vanished (power loss, a NAT that forgot it) is noticed within about a minute.
func setKeepAlive(c *net.TCPConn) {
	_ = c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 30e9, Interval: 10e9, Count: 3})
}

// waitReadable blocks, holding no buffer, until c has data or an end to read, or a read
// deadline passes. An idle link spends its life here, so a pooled link costs only its
// socket and a parked goroutine.
func waitReadable(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return raw.Read(func(fd uintptr) bool {
		block, _ := peek(fd)
		return !block
	})
}
