//go:build linux

package sock

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errnoErr returns e as an error, nil for 0; the errors unix returns for the common ones
// are the same values, so errors.Is(err, unix.EAGAIN) works on what this package returns.
func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Accept takes a connection from the non-blocking listening socket lfd and returns its
// descriptor, non-blocking and close-on-exec, and the client's address (IPv4-mapped IPv6
// addresses unmapped). It is one accept4(2): unix.Accept4 adds a getsockopt (SO_PROTOCOL)
// to every IPv4 and IPv6 accept to tell L2TP sockets apart.
func Accept(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&n)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), AddrPortOf(&rsa), nil
}

// AddrPortOf returns the IP address and port of a raw socket address, IPv4-mapped IPv6
// addresses unmapped, or the zero AddrPort for any other family.
func AddrPortOf(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), netPort(&sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), netPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// netPort reads a port stored in network byte order.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// raw fills rsa with a's address and returns its length for bind(2) or connect(2). An
// IPv6 zone (fe80::1%eth0) is an interface name or index.
func raw(a netip.AddrPort, rsa *unix.RawSockaddrAny) uintptr {
	port := a.Port()
	if a.Addr().Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		sa.Family = unix.AF_INET
		sa.Addr = a.Addr().As4()
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unix.SizeofSockaddrInet4
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
	sa.Family = unix.AF_INET6
	sa.Addr = a.Addr().As16()
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	if zone := a.Addr().Zone(); zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			sa.Scope_id = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(zone); err == nil {
			sa.Scope_id = uint32(n)
		}
	}
	return unix.SizeofSockaddrInet6
}

// Socket returns a new non-blocking, close-on-exec TCP socket for a's family (AF_INET for
// IPv4, AF_INET6 otherwise).
func Socket(a netip.Addr) (int, error) {
	family := unix.AF_INET6
	if a.Is4() {
		family = unix.AF_INET
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// Bind binds the socket fd to a.
func Bind(fd int, a netip.AddrPort) error {
	var rsa unix.RawSockaddrAny
	l := raw(a, &rsa)
	_, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), l)
	return errnoErr(e)
}

// Connect starts a connect of the non-blocking socket fd to a; unix.EINPROGRESS means it
// goes on, and the socket becomes writable (or reports its error, see Error) when it ends.
func Connect(fd int, a netip.AddrPort) error {
	var rsa unix.RawSockaddrAny
	l := raw(a, &rsa)
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), l)
	return errnoErr(e)
}

// LocalAddr returns the address the socket fd is bound to. A failed call is an
// *os.SyscallError.
func LocalAddr(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}, os.NewSyscallError("getsockname", e)
	}
	a := AddrPortOf(&rsa)
	if !a.IsValid() {
		return a, errors.New("no IP address")
	}
	return a, nil
}

// setInt sets an integer socket option.
func setInt(fd, level, name, v int) error {
	val := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(unsafe.Pointer(&val)), 4, 0)
	return errnoErr(e)
}

// getInt reads an integer socket option.
func getInt(fd, level, name int) (int, error) {
	var val int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(unsafe.Pointer(&val)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(val), nil
}

// SetRcvLowat sets how many bytes fd must have queued before the kernel tells a waiter
// (epoll, the runtime's poller) that it is readable (SO_RCVLOWAT; 1 is the default).
// A read that does not wait still returns whatever is queued, and a FIN or an error is
// told at once; a waiter for fewer bytes than the mark would wait until more come, so
// set it back to 1 before waiting for a stream that may go quiet.
func SetRcvLowat(fd, n int) error { return setInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, n) }

// Queued returns how many bytes fd has received and not yet given to a read (SIOCINQ),
// or -1 when the kernel cannot tell.
func Queued(fd int) int {
	n, err := ioctlInt(fd, unix.SIOCINQ)
	if err != nil {
		return -1
	}
	return n
}

// SetNoDelay turns Nagle's algorithm off on fd (TCP_NODELAY).
func SetNoDelay(fd int) error { return setInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) }

// Error returns the socket's pending error (SO_ERROR, a unix.Errno), which a failed
// non-blocking connect leaves, and clears it; nil when there is none. A failure to ask is
// an *os.SyscallError.
func Error(fd int) error {
	v, err := getInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	return errnoErr(unix.Errno(v))
}

// SetKeepAlive turns TCP keepalive on for fd with the given period: the first probe after
// that long without traffic (at least a second), then one every period, and the
// connection dropped after 9 unanswered.
func SetKeepAlive(fd int, period time.Duration) error {
	return SetKeepAliveProbes(fd, period, period, 9)
}

// SetKeepAliveProbes turns TCP keepalive on for fd: the first probe after idle without
// traffic, then one every interval (each at least a second), and the connection dropped
// after count unanswered.
func SetKeepAliveProbes(fd int, idle, interval time.Duration, count int) error {
	for _, o := range [...]struct{ level, name, value int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, max(int(idle/time.Second), 1)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, max(int(interval/time.Second), 1)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, count},
	} {
		if err := setInt(fd, o.level, o.name, o.value); err != nil {
			return err
		}
	}
	return nil
}

// Linger0 sets SO_LINGER to 0 on fd, so that its close sends a reset and drops what is
// unsent: how a relay passes a reset on, or makes a cut visible to the peer.
func Linger0(fd int) {
	l := unix.Linger{Onoff: 1, Linger: 0}
	_, _, _ = unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
}

// ioctlInt runs an ioctl that reads an int.
func ioctlInt(fd int, req uint) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&v)))
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

// Unacked returns the bytes (and FIN) written to the TCP socket fd that its peer has not
// acknowledged (SIOCOUTQ), or -1 when the kernel cannot tell.
func Unacked(fd int) int {
	n, err := ioctlInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return -1
	}
	return n
}

// InFlight returns the bytes (and FIN) sent on the TCP socket fd and not yet acknowledged,
// beyond those still waiting unsent in its queue (SIOCOUTQ less SIOCOUTQNSD), or -1 when
// the kernel cannot tell.
func InFlight(fd int) int {
	queued, err1 := ioctlInt(fd, unix.SIOCOUTQ)
	unsent, err2 := ioctlInt(fd, unix.SIOCOUTQNSD)
	if err1 != nil || err2 != nil {
		return -1
	}
	return queued - unsent
}

// Info returns the kernel's TCP_INFO for fd.
func Info(fd int) (unix.TCPInfo, error) {
	var info unix.TCPInfo
	l := uint32(unsafe.Sizeof(info))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	return info, errnoErr(e)
}

// PeerReset reports whether the peer of the TCP socket fd reset the connection: the kernel
// moves such a socket straight to TCP_CLOSE, which no clean end we have not caused yet
// reaches. (A clean end where both FINs are acknowledged reaches it too, through
// TIME_WAIT: ask only while something is still unacknowledged or unfinished.)
func PeerReset(fd int) bool {
	info, err := Info(fd)
	return err == nil && info.State == unix.BPF_TCP_CLOSE
}

// ShutdownWrite sends a FIN on fd once what is queued has gone: the half-close.
func ShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errnoErr(e)
}

// Recv reads into b from the non-blocking socket fd with recvfrom(2) flags (MSG_PEEK, say),
// again after an interrupted call: 0 with a nil error is the end of the stream,
// unix.EAGAIN means nothing has come.
func Recv(fd int, b []byte, flags int) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(p), uintptr(len(b)), uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Send writes from b to the non-blocking socket fd, again after an interrupted call, and
// returns how much went; unix.EAGAIN means fd takes nothing now. It never raises SIGPIPE
// (MSG_NOSIGNAL): a peer that is gone is unix.EPIPE.
func Send(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Write writes from b to the non-blocking descriptor fd (a pipe), again after an
// interrupted call, and returns how much went; unix.EAGAIN means fd takes nothing now.
func Write(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(p), uintptr(len(b)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Discard drops, without blocking and without copying, what the peer of the TCP socket fd
// has already sent (at most 64 MiB a call), and returns how many bytes that was: what a
// relay does to a side it stopped reading before it closes it, so the close is a FIN and
// not a reset. MSG_TRUNC discards in the kernel, so no buffer is passed.
func Discard(fd int) int {
	total := 0
	for range 64 {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 1<<20, unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			break
		}
		total += int(n)
		if int(n) < 1<<20 {
			break // drained: the next call would find nothing
		}
	}
	return total
}

// Splice moves up to max bytes from in to out with splice(2), SPLICE_F_MOVE and
// SPLICE_F_NONBLOCK, again after an interrupted call: one of the two is a pipe, and a
// socket among them must be non-blocking. 0 with a nil error is in's end of the stream;
// unix.EAGAIN means in has nothing or out takes nothing now.
func Splice(in, out, max int) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(max),
			unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}
