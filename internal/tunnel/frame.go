package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"shd-tcp-tools/internal/relay"
)

// The frames of a TLS link. A TLS link carries one client's session at a time and goes
// back to the pools when the session ends, so inside TLS each direction's bytes and its
// end travel as frames: a 3-byte header (type, then the payload's length as a big-endian
// uint16) and the payload.
//
//	DATA  1  1..maxFramePayload bytes of the session
//	FIN   2  no payload: this direction ended cleanly (the peer half-closes its socket)
//	RST   3  no payload: this side's socket was reset or the relay cut it (the peer resets)
//
// A session is over on a side once that side has sent a FIN or RST and received one;
// only then may the next session start on the link. Plain links carry no frames: their
// bytes are the session's, relayed by splice. docs/tunnel.md, *Sessions on TLS links*.
const (
	frameData = 1
	frameFin  = 2
	frameRst  = 3

	frameHeader = 3
	// maxFramePayload is the largest DATA payload: a header and a full payload are one
	// TLS record (16 KiB of plaintext).
	maxFramePayload = 16<<10 - frameHeader
)

// errPeerRst is what frameReader.Read returns once the peer's RST has come (its FIN is
// io.EOF).
var errPeerRst = relay.ErrSessionReset

// frameError is a peer that broke the frame protocol: the link cannot be trusted to be
// in step any more and is closed.
type frameError struct{ why string }

func (e *frameError) Error() string { return "link protocol error: " + e.why }

// frameReader reads one session's data out of the frames on a link. Its state survives a
// read that timed out (a read deadline on the TLS connection is not fatal), and it holds
// no payload of its own: a DATA frame's bytes are read straight into the caller's buffer.
// Not safe for simultaneous use.
type frameReader struct {
	r    io.Reader
	pre  []byte // bytes already read from r by the handshake, consumed first
	hdr  [frameHeader]byte
	hdrN int  // bytes of hdr read so far
	left int  // payload bytes of the current DATA frame not read yet
	end  byte // the end frame this session received: 0, frameFin or frameRst
}

// read reads from pre, then from r.
func (f *frameReader) read(p []byte) (int, error) {
	if len(f.pre) > 0 {
		n := copy(p, f.pre)
		f.pre = f.pre[n:]
		return n, nil
	}
	return f.r.Read(p)
}

// Read returns the session's bytes; io.EOF once the peer's FIN has come, errPeerRst once
// its RST has. A frame that breaks the protocol is a *frameError; a link that ends in the
// middle of a frame is io.ErrUnexpectedEOF, and one that ends between frames errLinkEnded
// (never io.EOF, which is the peer's FIN).
func (f *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for f.left == 0 {
		switch f.end {
		case frameFin:
			return 0, io.EOF
		case frameRst:
			return 0, errPeerRst
		}
		if err := f.header(); err != nil {
			return 0, err
		}
	}
	n, err := f.read(p[:min(len(p), f.left)])
	f.left -= n
	if n > 0 {
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return 0, err
}

// errLinkEnded is a link whose TLS stream ended between frames, in a session or while idle.
var errLinkEnded = errors.New("link closed")

// header reads the next frame's header and takes it in.
func (f *frameReader) header() error {
	for f.hdrN < frameHeader {
		n, err := f.read(f.hdr[f.hdrN:])
		f.hdrN += n
		if f.hdrN == frameHeader {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if f.hdrN == 0 {
					return errLinkEnded
				}
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	f.hdrN = 0
	typ, n := f.hdr[0], int(binary.BigEndian.Uint16(f.hdr[1:]))
	switch {
	case typ == frameData && n >= 1 && n <= maxFramePayload:
		f.left = n
	case typ == frameData:
		return &frameError{fmt.Sprintf("DATA frame of %d bytes (1 to %d allowed)", n, maxFramePayload)}
	case typ == frameFin || typ == frameRst:
		if n != 0 {
			return &frameError{fmt.Sprintf("end frame with a %d-byte payload", n)}
		}
		f.end = typ
	default:
		return &frameError{fmt.Sprintf("unknown frame type %d", typ)}
	}
	return nil
}

// ended reports the end frame this session received (0: none yet).
func (f *frameReader) ended() byte { return f.end }

// inFrame reports how many bytes of the current DATA frame are still to be read.
func (f *frameReader) inFrame() int { return f.left }

// next starts the next session: the end frame of this one has been read.
func (f *frameReader) next() { f.end = 0 }

// drain reads and drops the rest of the session up to the peer's end frame, through buf.
// It returns nil once the end has come.
func (f *frameReader) drain(buf []byte) error {
	for {
		_, err := f.Read(buf)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, errPeerRst):
			return nil
		default:
			return err
		}
	}
}

// appendFrame appends a frame of type typ with payload p to b.
func appendFrame(b []byte, typ byte, p []byte) []byte {
	b = putFrameHeader(append(b, make([]byte, frameHeader)...), typ, len(p))
	return append(b, p...)
}

// putFrameHeader writes the header of a frame of type typ with an n-byte payload into the
// last frameHeader bytes of b, and returns b: the one place a header is encoded.
func putFrameHeader(b []byte, typ byte, n int) []byte {
	h := b[len(b)-frameHeader:]
	h[0], h[1], h[2] = typ, byte(n>>8), byte(n)
	return b
}
