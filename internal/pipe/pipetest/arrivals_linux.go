package pipetest

import (
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Arrival is the cumulative byte count received at a moment.
type Arrival struct {
	At    time.Time
	Total int64
}

// ReceiveTimestamped reads c to EOF in reads of at most 16 KiB and returns when each read's
// bytes arrived. The time is the kernel's receive timestamp (SO_TIMESTAMPNS) of the last
// packet in the read, so a reader that the scheduler delays does not bunch arrivals. A read
// without one (its data arrived before the option was set) is timed when read, on the same
// clock; unstamped counts those. Set the option on the listener too (SetTimestamps), so
// that none arrives unstamped. A zero deadline means none.
func ReceiveTimestamped(c *net.TCPConn, deadline time.Time) (arr []Arrival, unstamped int, err error) {
	if err := SetTimestamps(c); err != nil {
		return nil, 0, err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 16<<10)
	oob := make([]byte, 256)
	var total int64
	for {
		var n, oobn int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return arr, unstamped, err
		}
		if rerr != nil {
			return arr, unstamped, rerr
		}
		if n == 0 {
			return arr, unstamped, nil
		}
		at, ok := recvTime(oob[:oobn])
		if !ok {
			at = time.Now()
			unstamped++
		}
		total += int64(n)
		arr = append(arr, Arrival{at, total})
	}
}

// SetTimestamps turns on kernel receive timestamps (SO_TIMESTAMPNS) for a socket; set on a
// listener, accepted connections inherit it.
func SetTimestamps(s syscall.Conn) error {
	raw, err := s.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

func recvTime(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Unix()), true
		}
	}
	return time.Time{}, false
}

// MaxWindow returns the most bytes that arrived within any closed window of length w,
// windows that start before the first arrival (the first second) included.
func MaxWindow(arr []Arrival, w time.Duration) int64 {
	var most int64
	j := 0
	for i := range arr {
		for j+1 < len(arr) && !arr[j+1].At.After(arr[i].At.Add(w)) {
			j++
		}
		var before int64
		if i > 0 {
			before = arr[i-1].Total
		}
		most = max(most, arr[j].Total-before)
	}
	return most
}
