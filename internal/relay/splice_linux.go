//go:build linux

package relay

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/sock"
)

// maxSplice is the most bytes one splice call moves, and the size asked for each pipe (the
// standard library's choice too).
const maxSplice = 1 << 20

// kpipe is a kernel pipe used as the splice buffer between two sockets.
type kpipe struct {
	r, w    int
	cleanup runtime.Cleanup
}

// pipes caches empty pipes between uses. A pipe is taken only while bytes are in flight,
// so an idle connection holds none: two descriptors and the pipe's kernel buffer less per
// direction than io.Copy, which keeps its pipe while it waits.
var pipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice)
	p := &kpipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) {
		unix.Close(fds[0])
		unix.Close(fds[1])
	}, fds)
	return p
}}

// errNoPipe reports that no pipe could be created (out of descriptors or pipe memory).
// No byte is in flight then: Copy goes on without splice.
var errNoPipe = errors.New("creating a splice pipe: too many open files or no memory")

// ErrNoPipe is returned by Splicer.Fill when no pipe can be created (out of descriptors
// or pipe memory); no byte has moved then.
var ErrNoPipe = errNoPipe

func getPipe() (*kpipe, error) {
	p, _ := pipes.Get().(*kpipe)
	if p == nil {
		return nil, errNoPipe
	}
	return p, nil
}

// putPipe returns an empty pipe to the cache; a pipe that still holds bytes is closed.
func putPipe(p *kpipe, empty bool) {
	if empty {
		pipes.Put(p)
		return
	}
	p.cleanup.Stop()
	unix.Close(p.r)
	unix.Close(p.w)
}

// sink is what a splice loop writes to: write runs an attempt on the descriptor until it
// returns true, waiting between attempts until the descriptor takes more; fail names a
// splice into it that failed.
type sink struct {
	write func(attempt func(fd uintptr) bool) error
	fail  func(err error) error
}

// tcpSink is a connection as a splice destination, waited for by the runtime's poller.
func tcpSink(c *net.TCPConn) (sink, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return sink{}, err
	}
	return sink{write: raw.Write, fail: func(err error) error {
		return &net.OpError{Op: "splice", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("splice", err)}
	}}, nil
}

// spliceCopy moves bytes from src to dst with splice(2) through a pipe, without them
// entering user space. It reports every splice out of the pipe to o.Progress, so a count
// is exact at every moment, honours o.Bucket with at most one burst per splice, and
// stops on src's EOF, an error, or a deadline on either connection (how Join stops a
// direction). Failures of dst are *WriteError.
func spliceCopy(ctx context.Context, dst sink, src *net.TCPConn, o CopyOptions) (written int64, err error) {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var p *kpipe
	inPipe := 0
	defer func() {
		if p != nil {
			putPipe(p, inPipe == 0)
		}
	}()
	for {
		max, err := o.Bucket.Wait(ctx, maxSplice)
		if err != nil {
			return written, err
		}
		var n int
		var serr error
		rerr := srcRaw.Read(func(fd uintptr) bool {
			n, serr = 0, nil
			if p == nil {
				// Take a pipe only now, inside the read: it is given back below
				// before any wait, so an idle direction holds none.
				if p, serr = getPipe(); serr != nil {
					return true
				}
			}
			// A socket into an empty pipe, both non-blocking: the call cannot block.
			n, serr = sock.Splice(int(fd), p.w, max)
			if serr == unix.EAGAIN {
				// Drained for now: give the empty pipe back while we wait.
				putPipe(p, true)
				p = nil
				return false
			}
			return true
		})
		if rerr != nil {
			return written, rerr
		}
		if serr == errNoPipe {
			return written, serr
		}
		if serr != nil {
			return written, &net.OpError{Op: "splice", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(), Err: os.NewSyscallError("splice", serr)}
		}
		if n == 0 {
			return written, nil // EOF
		}
		inPipe = n
		o.Bucket.Used(n)
		for inPipe > 0 {
			var m int
			werr := dst.write(func(fd uintptr) bool {
				for {
					var k int64
					k, serr = unix.Splice(p.r, nil, int(fd), nil, inPipe, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
					m = int(k)
					switch serr {
					case unix.EINTR:
						continue
					case unix.EAGAIN:
						return false
					}
					return true
				}
			})
			if werr != nil {
				return written, &WriteError{werr}
			}
			if serr != nil {
				return written, &WriteError{dst.fail(serr)}
			}
			inPipe -= m
			written += int64(m)
			if o.Progress != nil {
				o.Progress(int64(m))
			}
		}
	}
}

// Splicer moves bytes from one non-blocking socket to another through a pooled kernel
// pipe, one step at a time, for callers that run their own event loop. It holds a pipe
// only while bytes are in it. The zero value is ready to use; call Release when done.
type Splicer struct {
	p      *kpipe
	inPipe int
}

// Fill splices up to max bytes from the socket src into the pipe. It returns the bytes
// moved; 0 with a nil error is src's EOF; unix.EAGAIN means src has nothing now (and the
// pipe, if empty, has gone back to the pool).
func (s *Splicer) Fill(src, max int) (int, error) {
	if s.p == nil {
		p, err := getPipe()
		if err != nil {
			return 0, ErrNoPipe
		}
		s.p = p
	}
	n, err := sock.Splice(src, s.p.w, max)
	switch err {
	case nil:
		s.inPipe += n
		if s.inPipe == 0 { // src's end: nothing will come to wait for
			putPipe(s.p, true)
			s.p = nil
		}
		return n, nil
	case unix.EAGAIN:
		if s.inPipe == 0 {
			putPipe(s.p, true)
			s.p = nil
		}
	}
	return 0, err
}

// Load writes b into the pipe (taking one when it holds none), for bytes read through user
// space that the destination did not take, and returns how many went in: all of b, unless
// the pipe is full. Drain writes them out after what the pipe held before.
func (s *Splicer) Load(b []byte) (int, error) {
	if s.p == nil {
		p, err := getPipe()
		if err != nil {
			return 0, ErrNoPipe
		}
		s.p = p
	}
	n, err := sock.Write(s.p.w, b)
	s.inPipe += n
	if s.inPipe == 0 {
		putPipe(s.p, true)
		s.p = nil
	}
	return n, err
}

// Drain splices what the pipe holds into the socket dst and returns the bytes moved;
// unix.EAGAIN means dst cannot take more now.
func (s *Splicer) Drain(dst int) (int, error) {
	if s.inPipe == 0 {
		return 0, nil
	}
	n, err := sock.Splice(s.p.r, dst, s.inPipe)
	if err != nil {
		return 0, err
	}
	s.inPipe -= n
	if s.inPipe == 0 {
		putPipe(s.p, true)
		s.p = nil
	}
	return n, nil
}

// Pending returns the bytes in the pipe, read from the source and not yet written.
func (s *Splicer) Pending() int { return s.inPipe }

// Release gives the pipe back (or closes it, when bytes are left in it).
func (s *Splicer) Release() {
	if s.p != nil {
		putPipe(s.p, s.inPipe == 0)
		s.p, s.inPipe = nil, 0
	}
}
