// Package pipetest holds helpers shared by the tests of the pipe engine and of the tcppipe
// command.
package pipetest

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's sock_diag structures (linux/inet_diag.h), which x/sys/unix does not define.
type inetDiagSockID struct {
	Sport  [2]byte // big endian
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       inetDiagSockID
}

type inetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      inetDiagSockID
	Expires uint32
	RQueue  uint32 // for a listening socket: connections waiting to be accepted
	WQueue  uint32
	UID     uint32
	Inode   uint32
}

const tcpListen = 10 // TCP_LISTEN in the kernel's state numbering

// ListenQueue reports whether a TCP socket (IPv4 or IPv6) listens on port and, if one
// does, how many connections wait in its accept queue. It asks the kernel through
// sock_diag netlink for listening sockets only, so unlike reading /proc/net/tcp, which
// lists every connection (tens of thousands in TIME_WAIT on a busy test machine), it costs
// the same however busy the machine is, and it never connects, which would use up the
// single accept of a tcppipe.
func ListenQueue(port int) (queue int, listening bool, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, false, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		q, ok, err := dump(fd, family, port)
		if err != nil || ok {
			return q, ok, err
		}
	}
	return 0, false, nil
}

func dump(fd int, family uint8, port int) (int, bool, error) {
	var req struct {
		hdr unix.NlMsghdr
		req inetDiagReqV2
	}
	req.hdr = unix.NlMsghdr{
		Len:   uint32(unsafe.Sizeof(req)),
		Type:  unix.SOCK_DIAG_BY_FAMILY,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP,
	}
	req.req = inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: 1 << tcpListen}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req))
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, false, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 64<<10)
	found, queue := false, 0
	for range 1000 { // a dump of listening sockets is a few messages
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, false, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, false, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return queue, found, nil
			case unix.NLMSG_ERROR:
				return 0, false, fmt.Errorf("sock_diag: the kernel refused the request")
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.Data) < int(unsafe.Sizeof(inetDiagMsg{})) {
					continue
				}
				msg := (*inetDiagMsg)(unsafe.Pointer(&m.Data[0]))
				if msg.State == tcpListen && int(binary.BigEndian.Uint16(msg.ID.Sport[:])) == port {
					found, queue = true, queue+int(msg.RQueue)
				}
			}
		}
	}
	return 0, false, fmt.Errorf("sock_diag: the dump did not end")
}
