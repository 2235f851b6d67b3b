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

func recvNonBlock(fd int, buf []byte) (int, error) {
	n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
	return n, err
}
