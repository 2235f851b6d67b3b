package relay

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/sock"
)

// The copy step adapts to what a direction carries, as HAProxy's splice-auto does. Small
// messages (requests, replies, a 64-byte echo) are read into the loop's buffer with
// recv(2) and sent on at once with send(2): two system calls and no pipe, where a splice
// needs two calls plus the pipe's own work (issue 12 measured about 15 µs a short
// connection spliced against 9 µs through recv and send). Once a read fills the buffer the
// direction moves bulk, and from then on it splices through a pooled pipe, so bulk bytes
// never enter user space. A splice that finds less than copyAgain is a short one, and
// copyBack short splices in a row take the direction back to recv and send: one short
// splice is no sign that a stream has ended (a busy sender, a window that just opened),
// and flipping at the first one sent every such stream through user space for a read
// (HAProxy likewise drops its streamer flag only after three small reads in a row).
const (
	copyAgain = 4 << 10
	copyBack  = 4
)

// mover is the copy step of one direction of a Pair, the one place that decides how bytes
// get from the source socket to the destination: recv and send through the loop's buffer
// for small messages, a splice through a pooled kernel pipe for bulk (see above). When no
// pipe can be had (out of descriptors), it copies through user space whatever the size,
// as the standard library's copy does, so the relay (and its EOF) goes on. The pump around
// it only asks for bytes, hands them on, and counts.
type mover struct {
	sp      Splicer
	held    []byte // read, not yet written, and in no pipe: its own copy
	bulk    bool   // the direction moves bulk: splice
	short   int    // short splices in a row, while bulk
	noPipes bool   // never take a pipe (PairOptions.NoPipes)
	spliced int64  // bytes taken from the source by splice: they never entered user space
	drained bool   // the last fill read less than it asked for: all the source had
}

// pending returns the bytes the mover holds: read from the source, not yet written.
func (m *mover) pending() int { return len(m.held) + m.sp.Pending() }

// fill takes up to most bytes from the socket src. While the direction moves small
// messages it reads them into buf (the loop's, shared: nothing is left in it) and sends
// them on to dst at once; what dst does not take is kept (pending). It returns the bytes
// read and the bytes written to dst; 0 read with a nil error is src's EOF, and unix.EAGAIN
// (unwrapped) means src has nothing now. Call it only when pending is 0.
func (m *mover) fill(src, dst int, buf []byte, most int) (read, written int, err error) {
	if m.bulk && !m.noPipes {
		n, err := m.sp.Fill(src, most)
		switch {
		case err == nil:
			m.spliced += int64(n)
			m.drained = n < most
			m.shortSplice(n < copyAgain)
			return n, 0, nil
		case errors.Is(err, unix.EAGAIN):
			return 0, 0, err
		case !errors.Is(err, ErrNoPipe):
			return 0, 0, os.NewSyscallError("splice", err)
		}
		// No pipe: this step goes through user space.
	}
	b := buf[:min(most, len(buf))]
	n, err := sock.Recv(src, b, 0)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, 0, err
	case err != nil:
		return 0, 0, os.NewSyscallError("recvfrom", err)
	case n == 0:
		return 0, 0, nil
	}
	if n == len(buf) {
		m.bulk = true // a full buffer: the next step splices
	}
	m.drained = n < len(b)
	w, err := sock.Send(dst, b[:n])
	switch {
	case errors.Is(err, unix.EAGAIN):
		w = 0
	case err != nil:
		return n, 0, os.NewSyscallError("sendto", err)
	}
	if w < n {
		m.keep(b[w:n])
	}
	return n, w, nil
}

// shortSplice counts a splice of a bulk direction: copyBack short ones in a row take it
// back to recv and send; a long one starts the count again.
func (m *mover) shortSplice(short bool) {
	switch {
	case !short:
		m.short = 0
	case m.short+1 < copyBack:
		m.short++
	default:
		m.bulk, m.short = false, 0
	}
}

// keep holds b, which dst did not take, until drain writes it: in a pipe (b is the loop's
// buffer and must be free when fill returns), or in a copy of its own when no pipe can be
// had.
func (m *mover) keep(b []byte) {
	if !m.noPipes {
		if k, err := m.sp.Load(b); err == nil {
			b = b[k:]
		}
	}
	if len(b) > 0 {
		m.held = append([]byte(nil), b...)
	}
}

// drain writes what the mover holds to the socket dst and returns how many bytes went;
// unix.EAGAIN (unwrapped) means dst cannot take more now.
func (m *mover) drain(dst int) (int, error) {
	if m.sp.Pending() > 0 { // first: keep put what it could into the pipe, the rest in held
		n, err := m.sp.Drain(dst)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return 0, os.NewSyscallError("splice", err)
		}
		return n, err
	}
	n, err := sock.Send(dst, m.held)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, err
	case err != nil:
		return 0, os.NewSyscallError("sendto", err)
	}
	m.held = m.held[n:]
	if len(m.held) == 0 {
		m.held = nil
	}
	return n, nil
}

// release gives the pipe back; what the mover still holds is dropped.
func (m *mover) release() {
	m.sp.Release()
	m.held = nil
}
