package tunnel

import (
	"encoding/binary"

	"shd-tcp-tools/internal/relay"
)

// tlsHeader is the length of a TLS record's header: type, version, and the length of the
// body as a big-endian uint16.
const tlsHeader = 5

// recordConn is the relay.Wire under a link's TLS session, read so that crypto/tls never
// takes more than the record it asked for from the bytes the Wire read ahead. crypto/tls
// reads records into a buffer that grows when more than one record comes in one read,
// and never shrinks: on a link that carries one session after another, a bulk session
// would leave every idle link holding 50 KiB or more. Bytes read from the socket itself
// (the handshake, a hello, no read-ahead) pass as they come; the reader keeps its place
// in the records either way.
type recordConn struct {
	*relay.Wire
	hdr  [tlsHeader]byte
	hdrN int // bytes of the current record's header read so far
	left int // bytes of the current record's body not read yet
}

func newRecordConn(w *relay.Wire) *recordConn { return &recordConn{Wire: w} }

// Read reads what the Wire has, up to the end of the current record (or its header)
// when the bytes come from the read-ahead.
func (r *recordConn) Read(p []byte) (int, error) {
	if r.Wire.Buffered() > 0 {
		if r.left > 0 {
			p = p[:min(len(p), r.left)]
		} else {
			p = p[:min(len(p), tlsHeader-r.hdrN)]
		}
	}
	n, err := r.Wire.Read(p)
	r.advance(p[:n])
	return n, err
}

// advance keeps the place in the records past b.
func (r *recordConn) advance(b []byte) {
	for len(b) > 0 {
		if r.left > 0 {
			k := min(len(b), r.left)
			r.left -= k
			b = b[k:]
			continue
		}
		k := copy(r.hdr[r.hdrN:], b)
		r.hdrN += k
		b = b[k:]
		if r.hdrN == tlsHeader {
			r.hdrN = 0
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
		}
	}
}
