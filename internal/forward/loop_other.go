//go:build !linux

package forward

import (
	"context"
	"errors"
	"net"
)

// serveLoops needs epoll and splice: tcp-pf runs on Linux only.
func (s *Server) serveLoops(context.Context, *net.TCPListener) (func(), func(), error) {
	return nil, nil, errors.New("tcp-pf needs Linux (epoll and splice)")
}
