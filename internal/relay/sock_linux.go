package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// isReset reports whether c's peer reset the connection: the kernel moves such a socket
// straight to TCP_CLOSE, which no clean end we have not caused yet reaches.
func isReset(c *net.TCPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var state uint8
	ok := false
	_ = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			state, ok = info.State, true
		}
	})
	return ok && state == unix.BPF_TCP_CLOSE
}

// recvDiscard drops up to max received bytes: for TCP, MSG_TRUNC discards them in the
// kernel without copying, so no buffer is passed.
func recvDiscard(fd, max int) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, uintptr(max),
		unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// unacked returns the bytes (and FIN) written to c that its peer has not acknowledged, or
// -1 when the kernel cannot tell.
func unacked(c *net.TCPConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = raw.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
			n = v
		}
	})
	return n
}
