package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Wire is the TCP connection under a layer (a TLS session) that Join relays in bulk: make
// the layer over NewWire(tcp) rather than over tcp itself (tls.Server(relay.NewWire(c),
// cfg)). Outside a relay it is the TCP connection: each Read and Write is one system call,
// and it holds no buffer, so an idle link costs what it did. While Join copies through the
// layer, the wire moves bulk in large system calls:
//
//   - Reading, it reads up to bulkSize bytes at a time ahead of the layer, taking the buffer
//     from a pool only once bytes are there (no buffer is held while it waits) and giving it
//     back when the layer has read them all; the copy then takes every record those bytes
//     complete in one step, without a system call.
//   - Writing, the records the layer makes of one Write are gathered and sent in one
//     write(2), flushed before the copy reads again.
//
// Its NetConn is the TCP connection, on which Join resets, lingers and settles; closing the
// layer's stream (close_notify) and the FIN work as without it.
type Wire struct {
	tcp *net.TCPConn
	raw syscall.RawConn

	rmu    sync.Mutex
	in     *[]byte // bytes read ahead: (*in)[off:end]; nil when none
	off    int
	end    int
	inErr  error // what ended the read-ahead (EOF, a failure), given once in is read
	nowait bool  // Read answers errWouldBlock rather than wait for the socket

	lw lowWater // the socket's low-water mark while a bulk copy reads ahead

	wmu    sync.Mutex
	gather bool    // Writes are appended to out until flush
	out    *[]byte // gathered bytes; nil when none
}

// bulkSize is the most bytes a bulk copy moves per step, and a read-ahead's size: sixteen
// TLS records.
const bulkSize = 256 << 10

// bulk holds the buffers of bulk copies and wires, with room for the records' overhead
// (22 bytes per 16 KiB record in TLS 1.3) beyond bulkSize.
var bulk = sync.Pool{New: func() any { b := make([]byte, bulkSize+bulkSlack); return &b }}

const bulkSlack = 4096

// NewWire returns the Wire over c. A layer made over it is relayed in bulk by Join.
func NewWire(c *net.TCPConn) *Wire {
	w := &Wire{tcp: c}
	if raw, err := c.SyscallConn(); err == nil {
		w.raw = raw
	}
	return w
}

// errWouldBlock answers a Read in no-wait mode when nothing is read ahead. It is temporary,
// so a TLS session keeps its state (a partial record stays in its input) and reads on.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "relay: no bytes read ahead" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// Read gives the bytes read ahead first; with none, it reads the socket once, as the
// TCP connection would.
func (w *Wire) Read(p []byte) (int, error) {
	w.rmu.Lock()
	defer w.rmu.Unlock()
	if w.in != nil {
		n := copy(p, (*w.in)[w.off:w.end])
		w.off += n
		if w.off == w.end {
			if cap(*w.in) == bulkSize+bulkSlack {
				bulk.Put(w.in)
			}
			w.in = nil
		}
		return n, nil
	}
	if w.inErr != nil {
		return 0, w.inErr
	}
	if w.nowait {
		return 0, errWouldBlock
	}
	return w.tcp.Read(p)
}

// Buffered returns how many bytes are read ahead and not yet given to the layer. A wait
// on the socket does not see them; after a relay they are what the peer sent next.
func (w *Wire) Buffered() int {
	w.rmu.Lock()
	defer w.rmu.Unlock()
	if w.in == nil {
		return 0
	}
	return w.end - w.off
}

// release gives the read-ahead buffer back to the pool, keeping the bytes still in it in
// a buffer of their size: a wire that outlives its relay holds no large buffer. The
// socket's low-water mark goes back down: an idle link is watched for readability.
func (w *Wire) release() {
	w.rmu.Lock()
	defer w.rmu.Unlock()
	lowerMark(w.raw, &w.lw)
	if w.in == nil {
		return
	}
	rest := make([]byte, w.end-w.off)
	copy(rest, (*w.in)[w.off:w.end])
	bulk.Put(w.in)
	w.in, w.off, w.end = &rest, 0, len(rest)
}

// setNoWait makes Read answer errWouldBlock, rather than wait, when nothing is read ahead.
func (w *Wire) setNoWait(on bool) {
	w.rmu.Lock()
	w.nowait = on
	w.rmu.Unlock()
}

// fill waits until bytes are read ahead, or the stream's end or failure is (then Read
// returns it), reading up to bulkSize bytes. It returns the wait's error (a deadline, a
// closed connection).
func (w *Wire) fill() error {
	w.rmu.Lock()
	ready := w.in != nil || w.inErr != nil
	w.rmu.Unlock()
	if ready {
		return nil
	}
	b, n, err := readAhead(w.raw, bulkSize, &w.lw, frameShape{})
	if err != nil {
		var se *os.SyscallError
		if !errors.As(err, &se) {
			return err // the wait's own error: nothing was read
		}
	}
	w.rmu.Lock()
	defer w.rmu.Unlock()
	switch {
	case err != nil:
		w.inErr = &net.OpError{Op: "read", Net: "tcp", Source: w.tcp.LocalAddr(), Addr: w.tcp.RemoteAddr(), Err: err}
	case n == 0:
		w.inErr = io.EOF
	default:
		w.in, w.off, w.end = b, 0, n
	}
	return nil
}

// readAhead reads once from raw, up to most bytes, into a pooled buffer taken only when
// the socket has bytes: it is given back before every wait. It returns the buffer (nil on
// an error or the end) and the count; a failed read(2) is an *os.SyscallError, anything
// else the wait's error. A read that finds half a step or more raises the socket's
// low-water mark (lw); while the mark is up, a read that finds nothing waits for it in
// poll(2) for at most shortWaitMs, and the mark goes down before a wait in the runtime's
// poller. With a frame shape, the bytes are read into the payloads of frames laid out in
// the buffer (most counting the payload only).
func readAhead(raw syscall.RawConn, most int, lw *lowWater, frames frameShape) (*[]byte, int, error) {
	if raw == nil {
		return nil, 0, errors.New("relay: no raw connection")
	}
	var b *[]byte
	var n int
	var rerr error
	err := raw.Read(func(fd uintptr) bool {
		b = bulk.Get().(*[]byte)
		for {
			if frames.payload > 0 {
				n, rerr = frames.readFrames(int(fd), *b, most)
			} else {
				n, rerr = syscall.Read(int(fd), (*b)[:min(most, bulkSize)])
			}
			if rerr == syscall.EAGAIN && lw.up() && pollWait(int(fd), pollIn, shortWaitMs) {
				continue
			}
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			bulk.Put(b)
			b = nil
			lw.waiting(int(fd))
			return false
		}
		if n >= streamMark {
			lw.streaming(int(fd))
		}
		return true
	})
	if err == nil && (rerr != nil || n <= 0) {
		err = rerr
		if rerr != nil {
			err = os.NewSyscallError("read", rerr)
		}
		n = 0
	}
	if err != nil || n == 0 {
		if b != nil {
			bulk.Put(b)
		}
		return nil, 0, err
	}
	return b, n, nil
}

// lowerMark puts raw's low-water mark back down, if lw raised it.
func lowerMark(raw syscall.RawConn, lw *lowWater) {
	if raw != nil {
		_ = raw.Control(func(fd uintptr) { lw.waiting(int(fd)) })
	}
}

// Write sends p, or appends it to the bytes gathered while a bulk copy writes.
func (w *Wire) Write(p []byte) (int, error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if !w.gather {
		return w.tcp.Write(p)
	}
	if w.out != nil && len(*w.out)+len(p) > cap(*w.out) {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	if w.out == nil {
		if len(p) > bulkSize {
			return w.tcp.Write(p)
		}
		w.out = bulk.Get().(*[]byte)
		*w.out = (*w.out)[:0]
	}
	*w.out = append(*w.out, p...)
	return len(p), nil
}

// startGather makes Writes gather until flush.
func (w *Wire) startGather() {
	w.wmu.Lock()
	w.gather = true
	w.wmu.Unlock()
}

// flush sends what was gathered in one write and ends the gathering.
func (w *Wire) flush() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.gather = false
	return w.flushLocked()
}

func (w *Wire) flushLocked() error {
	if w.out == nil {
		return nil
	}
	b := w.out
	w.out = nil
	_, err := writeStream(w.tcp, *b)
	*b = (*b)[:cap(*b)]
	bulk.Put(b)
	return err
}

// theWire finds the Wire under a layer, also in a type that embeds it (see under).
func (w *Wire) theWire() *Wire { return w }

// NetConn returns the TCP connection.
func (w *Wire) NetConn() net.Conn { return w.tcp }

// Close closes the TCP connection.
func (w *Wire) Close() error { return w.tcp.Close() }

// LocalAddr is the TCP connection's.
func (w *Wire) LocalAddr() net.Addr { return w.tcp.LocalAddr() }

// RemoteAddr is the TCP connection's.
func (w *Wire) RemoteAddr() net.Addr { return w.tcp.RemoteAddr() }

// SetDeadline sets the TCP connection's deadlines.
func (w *Wire) SetDeadline(t time.Time) error { return w.tcp.SetDeadline(t) }

// SetReadDeadline sets the TCP connection's read deadline; bytes already read ahead are
// still given.
func (w *Wire) SetReadDeadline(t time.Time) error { return w.tcp.SetReadDeadline(t) }

// SetWriteDeadline sets the TCP connection's write deadline.
func (w *Wire) SetWriteDeadline(t time.Time) error { return w.tcp.SetWriteDeadline(t) }
