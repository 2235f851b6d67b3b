//go:build !linux

package relay

import (
	"context"
	"net"
)

func spliceCopy(ctx context.Context, dst, src *net.TCPConn, o CopyOptions) (int64, error) {
	return chunkedCopy(ctx, dst, src, o)
}

func isReset(*net.TCPConn) bool            { return false }
func recvDiscard(fd, max int) (int, error) { return 0, nil }
func unacked(*net.TCPConn) int             { return -1 }
