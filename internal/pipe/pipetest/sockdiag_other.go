//go:build !linux

package pipetest

import "errors"

// ListenQueue needs Linux's sock_diag.
func ListenQueue(port int) (queue int, listening bool, err error) {
	return 0, false, errors.ErrUnsupported
}
