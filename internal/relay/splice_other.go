//go:build !linux

package relay

import (
	"context"
	"errors"
	"net"
	"os"
)

var errNoPipe = errors.New("splice is not used on this system")

const ownLoops = false

type sink struct {
	write func(func(uintptr) bool) error
}

func tcpSink(*net.TCPConn) (sink, error)               { return sink{}, errNoPipe }
func fileSink(context.Context, *os.File) (sink, error) { return sink{}, errNoPipe }
func spliceable(*os.File) bool                         { return false }
func spliceCopy(context.Context, sink, *net.TCPConn, CopyOptions) (int64, error) {
	return 0, errNoPipe
}
func fileToSocket(context.Context, *net.TCPConn, *os.File, CopyOptions) (int64, bool, error) {
	return 0, false, nil
}

func isReset(*net.TCPConn) bool { return false }
func discardFD(int) int         { return 0 }
func unacked(*net.TCPConn) int  { return -1 }

func isRegular(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// ConnReset reports whether c's peer reset the connection: never known here.
func ConnReset(c *net.TCPConn) bool { return false }

// ConnUnacked returns the bytes written to c that its peer has not acknowledged: -1, not
// known here.
func ConnUnacked(c *net.TCPConn) int { return -1 }

func inFlight(*net.TCPConn) int { return -1 }
