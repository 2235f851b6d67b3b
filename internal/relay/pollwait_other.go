//go:build !linux

package relay

import "net"

const (
	shortWaitMs = 0
	pollIn      = 1
	pollOut     = 4
)

// pollWait waits in the runtime's poller only where poll(2) is not used.
func pollWait(int, int16, int) bool { return false }

// writeStream is c.Write where poll(2) is not used.
func writeStream(c *net.TCPConn, b []byte) (int, error) { return c.Write(b) }
