package relay

import (
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A bulk copy that streams waits for its socket in poll(2) first, for at most
// shortWaitMs, and only then in the runtime's poller. A wait in the poller parks the
// goroutine: its thread looks for other work and sleeps (a futex), the thread blocked in
// epoll_wait is woken by the socket and wakes another to run the goroutine, and when the
// whole process has gone idle, sysmon, woken from its deep sleep by the next system call,
// polls every 20 µs for a millisecond. A wait in poll(2) is the kernel's alone: the
// thread sleeps in the system call and the socket wakes it. The runtime leaves its P
// alone for that long (sysmon takes a P from a system call only after 10 ms while others
// are idle), and a stop (a deadline in the past) waits at most that long more.
const shortWaitMs = 1

const (
	pollIn  = unix.POLLIN
	pollOut = unix.POLLOUT
)

// pollWait waits at most ms milliseconds, in poll(2), for fd to be ready for ev, and
// reports whether it is.
func pollWait(fd int, ev int16, ms int) bool {
	p := unix.PollFd{Fd: int32(fd), Events: ev}
	for {
		n, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(ms))
		if e == unix.EINTR {
			continue
		}
		return e == 0 && n > 0
	}
}

// writeStream writes all of b to c, as c.Write does (its error too), but when the socket
// is full it waits for room in poll(2) first (shortWaitMs), then in the runtime's poller,
// which minds c's write deadline.
func writeStream(c *net.TCPConn, b []byte) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return c.Write(b)
	}
	done := 0
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		for done < len(b) {
			n, e := unix.Write(int(fd), b[done:])
			if n > 0 {
				done += n
			}
			switch e {
			case nil, unix.EINTR:
			case unix.EAGAIN:
				if !pollWait(int(fd), pollOut, shortWaitMs) {
					return false
				}
			default:
				werr = os.NewSyscallError("write", e)
				return true
			}
		}
		return true
	})
	if werr == nil && err != nil {
		werr = err // the wait's: a deadline, a closed connection
		if oe, ok := err.(*net.OpError); ok {
			werr = oe.Err // unwrapped from raw-write, as c.Write gives it
		}
	}
	if werr != nil {
		return done, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: werr}
	}
	return done, nil
}
