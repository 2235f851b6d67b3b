package relay

import (
	"errors"
	"os"

	"shd-tcp-tools/internal/sock"

	"golang.org/x/sys/unix"
)

// mover is the copy step of one direction of a Pair, the one place that decides how bytes
// get from the source socket to the destination: a splice through a pooled kernel pipe, or,
// when no pipe can be had (out of descriptors), a user-space buffer, as the standard
// library's copy does, so the relay (and its EOF) goes on. The pump around it only asks
// for bytes, hands them on, and counts.
type mover struct {
	sp      Splicer
	held    []byte // read through user space when no pipe could be had
	heldBuf []byte // where held is read into
	noPipes bool   // never take a pipe (PairOptions.NoPipes)
}

// pending returns the bytes the mover holds: read from the source, not yet written.
func (m *mover) pending() int { return len(m.held) + m.sp.Pending() }

// fill takes up to most bytes from the socket src. It returns how many; 0 with a nil error
// is src's EOF, and unix.EAGAIN (unwrapped) means src has nothing now. Call it only when
// pending is 0.
func (m *mover) fill(src, most int) (int, error) {
	n, err := 0, ErrNoPipe
	if !m.noPipes {
		n, err = m.sp.Fill(src, most)
	}
	switch {
	case err == nil, errors.Is(err, unix.EAGAIN):
		return n, err
	case errors.Is(err, ErrNoPipe):
		n, err = m.readThrough(src, most)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			err = os.NewSyscallError("read", err)
		}
		return n, err
	}
	return 0, os.NewSyscallError("splice", err)
}

// drain writes what the mover holds to the socket dst and returns how many bytes went;
// unix.EAGAIN (unwrapped) means dst cannot take more now.
func (m *mover) drain(dst int) (int, error) {
	if len(m.held) > 0 {
		n, err := sock.Send(dst, m.held)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return 0, err
		case err != nil:
			return 0, os.NewSyscallError("write", err)
		}
		m.held = m.held[n:]
		return n, nil
	}
	n, err := m.sp.Drain(dst)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return 0, os.NewSyscallError("splice", err)
	}
	return n, err
}

// release gives the pipe back; what the mover still holds is dropped.
func (m *mover) release() {
	m.sp.Release()
	m.held = nil
}

// readThrough reads up to most bytes from src into held, for when no splice pipe can be
// had; drain writes them out.
func (m *mover) readThrough(src, most int) (int, error) {
	if m.heldBuf == nil {
		m.heldBuf = make([]byte, 16<<10) // once per direction; held is empty when we get here
	}
	buf := m.heldBuf[:min(most, len(m.heldBuf))]
	n, err := sock.Recv(src, buf, 0)
	if err != nil {
		return 0, err
	}
	m.held = buf[:n]
	return n, nil
}
