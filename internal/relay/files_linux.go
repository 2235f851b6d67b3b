//go:build linux

package relay

import (
	"context"
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// ownLoops says that Copy has its own zero-copy loops on this system.
const ownLoops = true

// maxSendfile is the most bytes one sendfile call is asked to move (the standard
// library's choice too).
const maxSendfile = 4 << 20

// filePoll is how long one wait for a file to take more bytes lasts before ctx is looked
// at again.
const filePoll = 100 // milliseconds

// fileSink is f as a splice destination. Its waits use poll(2) on the descriptor, a
// tenth of a second at a time so that a cancelled ctx is seen: a stdout that a shell
// gives is usually in blocking mode, which the runtime's poller does not take.
func fileSink(ctx context.Context, f *os.File) (sink, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return sink{}, err
	}
	write := func(attempt func(fd uintptr) bool) error {
		var werr error
		err := raw.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			for !attempt(fd) {
				if werr = ctx.Err(); werr != nil {
					return
				}
				if _, err := unix.Poll(pfd, filePoll); err != nil && err != unix.EINTR {
					werr = os.NewSyscallError("poll", err)
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return werr
	}
	return sink{write: write, fail: func(err error) error {
		return &os.PathError{Op: "write", Path: f.Name(), Err: err}
	}}, nil
}

// spliceable reports whether splice(2) can write to f: a regular file, a pipe, a socket
// or /dev/null, not opened for appending. Other devices (/dev/full, a terminal) are
// written with write(2), which also gives their true errors ("no space left on device"
// rather than splice's "invalid argument").
func spliceable(f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(fdOf(f)), &st); err != nil {
		return false
	}
	if fl, err := unix.FcntlInt(fdOf(f), unix.F_GETFL, 0); err != nil || fl&unix.O_APPEND != 0 {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK:
		return true
	case unix.S_IFCHR:
		return unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3 // /dev/null
	}
	return false
}

// isRegular reports whether f is a regular file.
func isRegular(f *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(fdOf(f)), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}

// fdOf returns f's descriptor without Fd's side effect of making it blocking.
func fdOf(f *os.File) uintptr {
	fd := ^uintptr(0)
	if raw, err := f.SyscallConn(); err == nil {
		_ = raw.Control(func(d uintptr) { fd = d })
	}
	return fd
}

// fileToSocket copies a regular file to a connection with sendfile(2), reporting every
// call to o.Progress and paying o.Bucket per call with carried-over credit, as
// spliceCopy does. handled is false when the file cannot be sent so (sendfile refused it
// before any byte moved): the caller copies some other way.
func fileToSocket(ctx context.Context, dst *net.TCPConn, src *os.File, o CopyOptions) (written int64, handled bool, err error) {
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	handled = true
	cerr := srcRaw.Control(func(sfd uintptr) {
		for {
			var max int
			if max, err = o.Bucket.Wait(ctx, maxSendfile); err != nil {
				return
			}
			var n int
			var serr error
			werr := dstRaw.Write(func(fd uintptr) bool {
				for {
					n, serr = unix.Sendfile(int(fd), int(sfd), nil, max)
					switch serr {
					case unix.EINTR:
						continue
					case unix.EAGAIN:
						return false
					}
					return true
				}
			})
			switch {
			case werr != nil:
				err = &WriteError{werr}
				return
			case serr != nil && written == 0 && (serr == unix.EINVAL || serr == unix.ENOSYS || serr == unix.EOPNOTSUPP):
				handled = false
				return
			case errors.Is(serr, unix.EPIPE) || errors.Is(serr, unix.ECONNRESET) || errors.Is(serr, unix.ENOTCONN):
				err = &WriteError{&net.OpError{Op: "sendfile", Net: "tcp", Source: dst.LocalAddr(), Addr: dst.RemoteAddr(), Err: os.NewSyscallError("sendfile", serr)}}
				return
			case serr != nil:
				err = &os.PathError{Op: "read", Path: src.Name(), Err: serr}
				return
			case n == 0:
				return // EOF
			}
			written += int64(n)
			o.Bucket.Used(n)
			if o.Progress != nil {
				o.Progress(int64(n))
			}
		}
	})
	if cerr != nil && err == nil {
		err = cerr
	}
	return written, handled, err
}
