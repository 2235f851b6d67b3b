// Package regfile opens the files the tools read their settings and counts from (host
// files, secret files) the one safe way: without waiting, and only when they are regular
// files.
package regfile

import (
	"errors"
	"os"
	"syscall"
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
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case fi.IsDir():
		err = &os.PathError{Op: "open", Path: path, Err: syscall.EISDIR}
	case !fi.Mode().IsRegular():
		err = &os.PathError{Op: "open", Path: path, Err: ErrNotRegular}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
