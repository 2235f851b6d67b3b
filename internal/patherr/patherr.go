// Package patherr words a failed file operation for a one-line message that names the
// file once: "reading /etc/hosts.txt: permission denied", not Go's
// "reading /etc/hosts.txt: open /etc/hosts.txt: permission denied".
package patherr

import (
	"errors"
	"io/fs"
)

// Wrap returns err as "WHAT PATH: reason", an *fs.PathError with WHAT as its operation.
// When err is (or wraps) an *fs.PathError, its operation and path are dropped, since WHAT
// and PATH already say them; the reason stays wrapped, so errors.Is(err, fs.ErrNotExist)
// and the like still hold. So Wrap of Wrap's error names the file anew: an engine says
// "secret file PATH: reason", and cmd/*, which knows the flag that gave PATH, puts the
// flag's name in place of "secret file". Wrap(nil) is nil.
func Wrap(what, path string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: what, Path: path, Err: Strip(err)}
}

// Strip returns the reason of an *fs.PathError in err's chain (the errno, usually), and
// err itself when there is none. It is for messages that name the path in their own words.
func Strip(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
