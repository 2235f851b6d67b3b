//go:build !linux

package relay

import "errors"

// framedReads is false where readv is not used: a Framer is written through Write.
const framedReads = false

func (frameShape) readFrames(int, []byte, int) (int, error) {
	return 0, errors.New("relay: framed reads are not used on this system")
}
