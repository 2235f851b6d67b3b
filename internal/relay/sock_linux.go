package relay

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/sock"
)

// ConnReset reports whether c's peer reset the connection (see sock.PeerReset).
func ConnReset(c *net.TCPConn) bool { return isReset(c) }

// isReset reports whether c's peer reset the connection (see sock.PeerReset).
func isReset(c *net.TCPConn) bool {
	reset := false
	control(c, func(fd int) { reset = sock.PeerReset(fd) })
	return reset
}

// ConnUnacked returns sock.Unacked for c's descriptor, or -1.
func ConnUnacked(c *net.TCPConn) int { return unacked(c) }

// unacked returns sock.Unacked for c's descriptor, or -1.
func unacked(c *net.TCPConn) int {
	n := -1
	control(c, func(fd int) { n = sock.Unacked(fd) })
	return n
}

// inFlight returns the bytes (and FIN) sent on c and not yet acknowledged, beyond those
// still waiting in its queue unsent, or -1 when the kernel cannot tell.
func inFlight(c *net.TCPConn) int {
	n := -1
	control(c, func(fd int) { n = sock.InFlight(fd) })
	return n
}

// Detach takes the socket of c out of the standard library's hands, for an event loop: it
// returns a new descriptor of the same socket (close-on-exec, and non-blocking as c's is)
// and closes c, so the socket lives on only through the descriptor returned, which the
// caller owns. The socket itself is not touched: no byte, FIN or option changes.
func Detach(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("detaching a connection: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("detaching a connection: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("detaching a connection: %w", os.NewSyscallError("fcntl", derr))
	}
	_ = c.Close()
	return fd, nil
}

// discardFD drops what the peer of fd has sent: see sock.Discard.
func discardFD(fd int) int { return sock.Discard(fd) }
