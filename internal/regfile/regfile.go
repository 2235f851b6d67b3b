// Package regfile opens the files the tools read the one safe way: without a wait that a
// signal cannot end. The files they read their settings and counts from (host files,
// secret files) must be regular files (Open); a stream they send on (--insert) may also
// be a FIFO or a device, and every wait for it ends with a context (OpenStream).
package regfile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is matched by Open's error for a path that is neither a regular file nor a
// directory: a FIFO, a device, a socket.
var ErrNotRegular = errors.New("not a regular file")

// Open opens path for reading, following symbolic links, and returns it when it is a
// regular file. Anything else is refused before a byte is read: a directory with
// syscall.EISDIR, the rest with ErrNotRegular. The open never waits: a FIFO that nobody
// writes would hold it (and whatever lock the caller holds) for ever, where SIGTERM
// cannot end it, and a device such as /dev/zero would never end. (O_NONBLOCK changes
// nothing for a regular file.) The error is the *os.PathError of the open or the check.
func Open(path string) (*os.File, error) {
	return open(path, func(f *os.File, mode os.FileMode) error {
		if !mode.IsRegular() {
			return &os.PathError{Op: "open", Path: path, Err: ErrNotRegular}
		}
		return nil
	})
}

// open opens path for reading without waiting, refuses a directory with syscall.EISDIR,
// and then asks check about the file's mode: its error closes the file and is returned.
func open(path string, check func(f *os.File, mode os.FileMode) error) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case fi.IsDir():
		err = &os.PathError{Op: "open", Path: path, Err: syscall.EISDIR}
	default:
		err = check(f, fi.Mode())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ErrTooLarge is ReadFile's error for a file larger than its limit.
var ErrTooLarge = errors.New("too large")

// ReadFile returns the content of the regular file at path (opened as Open does: a FIFO
// or a device is refused, never waited for or read without end) when it holds at most
// limit bytes, and an error matching ErrTooLarge when it holds more.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, ErrTooLarge
	}
	var b bytes.Buffer
	b.Grow(int(fi.Size()) + bytes.MinRead)
	if _, err = b.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, err
	}
	if int64(b.Len()) > limit { // it grew while read
		return nil, ErrTooLarge
	}
	return b.Bytes(), nil
}

// OpenStream opens path for reading as a stream: a regular file, or a FIFO, a character
// device or a socket. A directory is refused with syscall.EISDIR. Where open(2) would
// wait for a FIFO's writer, OpenStream opens without waiting and then waits for the writer
// (its first bytes, or its close) until ctx ends; at the end of ctx it returns ctx's
// error. Reads of the file that would wait (a FIFO or a device through the runtime's
// poller) fail with os.ErrDeadlineExceeded once ctx has ended. A blocking open(2) of a FIFO that nobody writes, or a read from it, is a
// wait that SIGTERM cannot end: Go catches the signal and the system call goes on.
func OpenStream(ctx context.Context, path string) (*os.File, error) {
	f, err := open(path, func(f *os.File, mode os.FileMode) error {
		if mode&os.ModeNamedPipe != 0 {
			return awaitWriter(ctx, f)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A file the poller holds (a FIFO, a device): its reads end with ctx. (A regular
	// file's never wait, and it takes no deadline.)
	context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	return f, nil
}

// awaitWriter waits until the FIFO f, opened without waiting, has a writer that wrote or
// closed: before that, a read finds no writer and returns 0, which is no end yet. The wait
// is the runtime poller's (an edge when bytes come or the writer closes), so a deadline
// ends it.
func awaitWriter(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0 && fds[0].Revents != 0 // bytes, or a writer came and went (POLLHUP)
	})
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}
