package relay

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// framedReads tells whether a bulk copy reads a socket straight into a Framer's frames.
const framedReads = true

// readFrames reads up to most payload bytes from fd into the payloads of the frames laid
// out in b (each header's room, then its payload), in one readv(2).
func (s frameShape) readFrames(fd int, b []byte, most int) (int, error) {
	var iov [maxFrames]unix.Iovec
	k := 0
	for off := 0; most > 0 && k < maxFrames; k++ {
		p := min(most, s.payload)
		iov[k].Base = &b[off+s.header]
		iov[k].SetLen(p)
		off += s.header + p
		most -= p
	}
	n, _, e := unix.Syscall(unix.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
