//go:build !linux

package relay

import (
	"context"
	"errors"
	"net"
)

var errNoPipe = errors.New("splice is not used on this system")

func spliceCopy(ctx context.Context, dst, src *net.TCPConn, o CopyOptions) (int64, error) {
	return 0, errNoPipe
}

func isReset(*net.TCPConn) bool            { return false }
func recvDiscard(fd, max int) (int, error) { return 0, nil }
func unacked(*net.TCPConn) int             { return -1 }
