package connlog

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// directWriter returns a function that writes p to out at once when that cannot block,
// and reports how much it wrote and whether it tried; nil when out is not such a file.
// It saves a tool that logs much (tcp-pf's loops, a round of lines each) the wake-up of
// the writer goroutine for every batch: a regular file or /dev/null never blocks, a pipe
// does not while its free space holds p, and a socket (journald's stream) is written with
// MSG_DONTWAIT. A terminal, or anything else, goes through the writer goroutine.
func directWriter(out io.Writer) func(p []byte) (n int, tried bool) {
	f, ok := out.(*os.File)
	if !ok {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	var tty bool
	if rc.Control(func(fd uintptr) {
		err = unix.Fstat(int(fd), &st)
		_, terr := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		tty = terr == nil
	}) != nil || err != nil || tty {
		return nil
	}
	var fits func(fd int, p []byte) bool
	write := func(fd int, p []byte) (int, error) { return unix.Write(fd, p) }
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFCHR: // a file, /dev/null (terminals were left out above)
		fits = func(int, []byte) bool { return true }
	case unix.S_IFIFO:
		fits = func(fd int, p []byte) bool {
			size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
			if err != nil {
				return false
			}
			queued, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD: bytes in the pipe
			return err == nil && len(p) <= size-queued
		}
	case unix.S_IFSOCK:
		fits = func(int, []byte) bool { return true }
		write = func(fd int, p []byte) (int, error) {
			return unix.SendmsgN(fd, p, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		}
	default:
		return nil
	}
	return func(p []byte) (n int, tried bool) {
		_ = rc.Control(func(fd uintptr) {
			if !fits(int(fd), p) {
				return
			}
			tried = true
			for n < len(p) {
				m, err := write(int(fd), p[n:])
				if err == unix.EINTR {
					continue
				}
				if err != nil || m <= 0 {
					return
				}
				n += m
			}
		})
		return n, tried
	}
}
