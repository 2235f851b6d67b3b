// Package relay moves bytes between connections: Copy is one direction, kept zero-copy
// (splice between sockets, sendfile from files) even when it is rate limited or metered;
// Join relays both directions of two TCP connections with the close modes the tools share
// (close both, or pass half-closes on), passes a reset on as a reset, and returns the bytes
// moved each way for the log line.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"shd-tcp-tools/internal/eventloop"

	"shd-tcp-tools/internal/ratelimit"
)

// DefaultChunk is how many bytes a metered but unlimited copy moves between two progress
// reports. One chunk is one io.CopyN, which the kernel still serves with splice or sendfile.
const DefaultChunk = 1 << 20

// CopyOptions tune one direction of a copy. The zero value copies as fast as io.Copy does.
type CopyOptions struct {
	// Bucket caps the bytes per second (ratelimit.NewBucket); nil means unlimited. Each
	// step waits for at most one burst of tokens and moves at most that many bytes, so
	// splice still applies; what a short step leaves is the next one's.
	Bucket *ratelimit.Bucket
	// Progress, when set, is called after every chunk with the bytes it moved. It runs on
	// the copying goroutine: keep it cheap (an atomic add).
	Progress func(n int64)
	// Tick, when positive and the source has read deadlines, cuts every read after Tick so
	// Progress hears of a slow trickle at least that often.
	Tick time.Duration
	// Chunk is the most bytes moved per step when Progress is set and Bucket is nil; zero
	// means DefaultChunk.
	Chunk int64
}

type readDeadliner interface{ SetReadDeadline(time.Time) error }

// WriteError is how Copy reports a failure of its destination, where it can tell the two
// ends apart (its own zero-copy loops); any other error is the source's or ctx's.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Copy copies from src to dst until src ends (io.EOF, which is not an error) or a read or
// write fails, and returns the bytes written. Pass raw *net.TCPConn and *os.File values:
// any wrapper hides them from the kernel's zero-copy paths. Copy runs its own zero-copy
// loops, which report every system call to Progress, so that a count is exact to the byte
// at every moment: from a connection to a connection or to a file (splice through a pipe
// held only while bytes are in flight), and from a regular file to a connection
// (sendfile). Elsewhere the standard library copies (copy_file_range between regular
// files, a buffer otherwise), in chunks when Progress or Bucket is set. A cancelled ctx
// stops a rate limited or metered copy between chunks, and a wait for a file destination
// within a tenth of a second; to stop a copy blocked on a connection, cancel ctx and set
// a read deadline in the past on src (a tick may delay that by up to Tick), or close a
// connection.
func Copy(ctx context.Context, dst io.Writer, src io.Reader, o CopyOptions) (int64, error) {
	var out sink
	var err error
	switch d := dst.(type) {
	case *net.TCPConn:
		switch s := src.(type) {
		case *net.TCPConn:
			out, err = tcpSink(d)
		case *os.File:
			if isRegular(s) {
				if n, handled, err := fileToSocket(ctx, d, s, o); handled {
					return n, err
				}
			}
		}
	case *os.File:
		if _, ok := src.(*net.TCPConn); ok && spliceable(d) {
			out, err = fileSink(ctx, d)
		}
	}
	if s, ok := src.(*net.TCPConn); ok && out.write != nil && err == nil {
		n, err := spliceCopy(ctx, out, s, o)
		if errors.Is(err, errNoPipe) {
			// Out of descriptors: the standard library's copy falls back to a
			// user-space buffer where it cannot get a pipe either.
			m, err := chunkedCopy(ctx, dst, src, o)
			return n + m, err
		}
		return n, err
	}
	if d, ok := bulkEndOf(dst); ok {
		if s, ok := bulkEndOf(src); ok && (d.wire != nil || s.wire != nil) {
			return bulkCopy(ctx, d, s, o)
		}
	}
	if o.Bucket == nil && o.Progress == nil {
		if isLayered(dst) || isLayered(src) {
			return bufferedCopy(dst, src)
		}
		return io.Copy(dst, src)
	}
	return chunkedCopy(ctx, dst, src, o)
}

// Framer is a layer that sends its bytes in frames: a header of a fixed size before each
// payload of at most a fixed size (the tunnel's sessions on TLS links, a frame a TLS
// record). A bulk copy from a TCP connection into a Framer reads the socket straight into
// frames, room left for each header (one readv(2)), and hands them over whole, so the
// payload is not copied once more to be framed.
type Framer interface {
	// FrameShape returns the size of a frame's header and the largest payload.
	FrameShape() (header, payload int)
	// WriteFrames sends the n payload bytes laid out in b as frames (each header's room,
	// then its payload, every payload full but the last), filling the headers in, and
	// returns how many of the n it wrote.
	WriteFrames(b []byte, n int) (int, error)
}

// frameShape is a Framer's frame: the header's size and the largest payload.
type frameShape struct{ header, payload int }

// maxFrames bounds the frames of one step (the iovecs of one readv).
const maxFrames = 64

// fit returns how many payload bytes of at most most fit in one bulk buffer as frames.
func (s frameShape) fit(most int) int {
	k := min((bulkSize+bulkSlack)/(s.header+s.payload), maxFrames)
	return min(most, k*s.payload)
}

// size returns the length of the frames that carry n payload bytes.
func (s frameShape) size(n int) int {
	return n + (n+s.payload-1)/s.payload*s.header
}

// bulkEnd is one end of a bulk copy: a TCP connection, or a layer over a Wire.
type bulkEnd struct {
	tcp   *net.TCPConn // the connection copied, when it is a plain one
	layer Layered      // the layer copied, when it is over a Wire
	wire  *Wire
	lw    *lowWater // tcp's low-water mark, when it is the source
	// frames is the shape a TCP source reads into, for a Framer destination (zero: none).
	frames frameShape
}

func bulkEndOf(x any) (bulkEnd, bool) {
	switch c := x.(type) {
	case *net.TCPConn:
		return bulkEnd{tcp: c}, true
	case Layered:
		if w, _ := under(c); w != nil {
			return bulkEnd{layer: c, wire: w}, true
		}
	}
	return bulkEnd{}, false
}

// read returns the next bytes of the end, at most most, in a pooled buffer (nil with an
// error or the end); from a TCP source with a frame shape, laid out as frames, n counting
// the payload. From a layer over a Wire it takes every record that the bytes read ahead
// complete, and waits, holding no buffer, only when they complete none.
func (e bulkEnd) read(most int) (*[]byte, int, error) {
	if e.wire == nil {
		raw, err := e.tcp.SyscallConn()
		if err != nil {
			return nil, 0, err
		}
		if e.frames.payload > 0 {
			most = e.frames.fit(most)
		}
		b, n, err := readAhead(raw, most, e.lw, e.frames)
		if err == nil && n == 0 {
			err = io.EOF
		}
		return b, n, err
	}
	most = min(most, bulkSize)
	for {
		b := bulk.Get().(*[]byte)
		e.wire.setNoWait(true)
		n := 0
		var err error
		for n < most && err == nil {
			var m int
			m, err = e.layer.Read((*b)[n:most])
			n += m
		}
		e.wire.setNoWait(false)
		if errors.Is(err, errWouldBlock) {
			err = nil
		}
		if n > 0 || err != nil {
			if n == 0 {
				bulk.Put(b)
				b = nil
			}
			return b, n, err
		}
		bulk.Put(b)
		if err := e.wire.fill(); err != nil {
			return nil, 0, err
		}
	}
}

// write writes b to the end: into a layer over a Wire, the records of b go out in one
// write(2). With frames (a shape), b holds n payload bytes laid out as frames for the
// layer's WriteFrames; otherwise n is len(b).
func (e bulkEnd) write(b []byte, n int, frames frameShape) (int, error) {
	if e.wire == nil {
		return writeStream(e.tcp, b[:n])
	}
	e.wire.startGather()
	var err error
	if frames.payload > 0 {
		n, err = e.layer.(Framer).WriteFrames(b[:frames.size(n)], n)
	} else {
		n, err = e.layer.Write(b[:n])
	}
	if ferr := e.wire.flush(); ferr != nil && err == nil {
		n, err = 0, ferr
	}
	return n, err
}

// bulkCopy is Copy between TCP connections and layers over Wires, one of them at least a
// layer: up to bulkSize bytes per step, read as described at read and written in one
// write(2), each step reported to Progress once written (so Tick is not needed) and paid
// to Bucket. It stops on ctx between steps, and on a deadline set on src or dst.
func bulkCopy(ctx context.Context, dst, src bulkEnd, o CopyOptions) (int64, error) {
	if src.wire != nil {
		defer src.wire.release()
	} else if raw, err := src.tcp.SyscallConn(); err == nil {
		src.lw = new(lowWater)
		defer lowerMark(raw, src.lw)
		if f, ok := dst.layer.(Framer); ok && framedReads {
			if h, p := f.FrameShape(); h >= 0 && p > 0 && h+p <= bulkSize {
				src.frames = frameShape{h, p}
			}
		}
	}
	var written int64
	scheduled := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		if now := time.Now(); now.Sub(scheduled) >= eventloop.Reschedule {
			runtime.Gosched()
			scheduled = now
		}
		most, err := o.Bucket.Wait(ctx, bulkSize)
		if err != nil {
			return written, err
		}
		b, n, rerr := src.read(most)
		if n > 0 {
			m, werr := dst.write(*b, n, src.frames)
			bulk.Put(b)
			o.Bucket.Used(m)
			written += int64(m)
			if m > 0 && o.Progress != nil {
				o.Progress(int64(m))
			}
			if werr != nil {
				return written, &WriteError{werr}
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return written, nil
		default:
			return written, rerr
		}
	}
}

// bufferSize is the buffer of a copy to or from a Layered connection (TLS): two TLS
// records' worth, as io.Copy would allocate, but taken from a pool, since a tunnel with TLS
// runs two such copies for every client.
const bufferSize = 32 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, bufferSize); return &b }}

func isLayered(x any) bool {
	switch x.(type) {
	case Layered, Session:
		return true
	}
	return false
}

// bufferedCopy is io.Copy through a pooled buffer. The wrappers hide ReadFrom and WriteTo,
// which would make the copy allocate a buffer of its own.
func bufferedCopy(dst io.Writer, src io.Reader) (int64, error) {
	b := buffers.Get().(*[]byte)
	defer buffers.Put(b)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *b)
}

// Exact reports whether Copy moves src to dst with a loop of its own that reports every
// system call to Progress (see Copy): then a count taken from Progress is exact to the
// byte at every moment, even while the destination holds a write up.
func Exact(dst io.Writer, src io.Reader) bool {
	if !ownLoops {
		return false
	}
	switch d := dst.(type) {
	case *net.TCPConn:
		switch s := src.(type) {
		case *net.TCPConn:
			return true
		case *os.File:
			return isRegular(s)
		}
	case *os.File:
		_, ok := src.(*net.TCPConn)
		return ok && spliceable(d)
	}
	return false
}

// chunkedCopy is Copy for files and other writers: io.CopyN steps, each of which the
// standard library still serves with sendfile or splice where it can.
func chunkedCopy(ctx context.Context, dst io.Writer, src io.Reader, o CopyOptions) (int64, error) {
	step := o.Chunk
	if step <= 0 {
		step = DefaultChunk
	}
	if o.Bucket != nil {
		step = 1 << 30 // one burst a step: the Bucket's
	}
	var dl readDeadliner
	if o.Tick > 0 {
		if d, ok := src.(readDeadliner); ok && d.SetReadDeadline(time.Time{}) == nil {
			dl = d
		}
	}
	var written int64
	for {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		most, err := o.Bucket.Wait(ctx, int(min(step, 1<<30)))
		if err != nil {
			return written, err
		}
		if dl != nil {
			_ = dl.SetReadDeadline(time.Now().Add(o.Tick))
		}
		n, err := io.CopyN(dst, src, int64(most))
		o.Bucket.Used(int(n))
		written += n
		if n > 0 && o.Progress != nil {
			o.Progress(n)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return written, nil
		case dl != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil:
			// Our own tick cut the read: report and go on.
		default:
			return written, err
		}
	}
}
