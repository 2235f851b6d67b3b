package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"shd-tcp-tools/internal/relay"
)

// sessionEndTimeout bounds the end of a session on a TLS link: the write of this side's
// end, and the wait for the peer's. A peer that does not answer in time leaves the link
// broken, and it is closed.
const sessionEndTimeout = 5 * time.Second

// framedLink is a TLS link that carries one client's session after another, in frames
// (frame.go). It keeps the TCP connection, which is watched and closed raw, the TLS
// connection over it, and where the reading of frames stands.
type framedLink struct {
	tcp *net.TCPConn
	tls *tls.Conn
	fr  frameReader
}

// newFramedLink makes a framed link of a TLS link whose handshake is done; pre holds
// bytes the handshake read past its last line.
func newFramedLink(tcp *net.TCPConn, tc *tls.Conn, pre []byte) *framedLink {
	l := &framedLink{tcp: tcp, tls: tc}
	l.fr = frameReader{r: tc, pre: pre}
	return l
}

// session starts the next session on l: the one before it is over on this side. stop
// is the program's context: once it ends, the link is closed after the session.
func (l *framedLink) session(stop context.Context) *linkSession {
	l.fr.next()
	return &linkSession{l: l, stop: stop}
}

// quiet checks, without waiting, that the peer sent nothing after its end of the
// session that is over: between sessions nothing may come until the relay starts the next
// one, so bytes already there would be taken for the next client's. The relay looks
// before a link rejoins its pool.
func (l *framedLink) quiet() error {
	l.fr.next()
	if err := l.tls.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return err
	}
	var b [1]byte
	n, err := l.fr.Read(b[:])
	switch {
	case n > 0, err == nil, errors.Is(err, io.EOF), errors.Is(err, errPeerRst),
		errors.Is(err, os.ErrDeadlineExceeded) && l.fr.hdrN > 0:
		return &frameError{"data between sessions"}
	case !errors.Is(err, os.ErrDeadlineExceeded):
		return err
	}
	return l.tls.SetReadDeadline(time.Time{})
}

// frameBuffers hold a frame being written, header and payload, or the bytes a drain
// drops: taken for a session, not kept by an idle link.
var frameBuffers = sync.Pool{New: func() any { b := make([]byte, 0, frameHeader+maxFramePayload); return &b }}

// linkSession is one session on a framedLink: a relay.Session (Join relays it with the
// close policy of two sockets, the ends as FIN and RST frames) and a net.Conn for the
// hello. Read is used by one goroutine at a time, and so is Write; the end frames may be
// written while a Write runs, and wait for its frame.
type linkSession struct {
	l *framedLink
	// stop ends when the program stops: End leaves the link to be closed then, so a
	// write still waiting for the peer is cut at once rather than given time (see
	// SetWriteDeadline).
	stop context.Context

	mu      sync.Mutex // held while a frame is written
	buf     *[]byte    // from frameBuffers, for DATA frames; nil before the first
	sentEnd bool       // a FIN or RST went out: no DATA may follow
	sentFin bool       // ... and it was a FIN

	stopped  atomic.Bool // a write deadline in the past stopped the writes
	failMu   sync.Mutex
	err      error // the link failed: it cannot carry another session
	reusable bool  // End finished the session on both sides, with the link intact
}

var _ relay.Session = (*linkSession)(nil)

// fail records that the link broke under the session.
func (s *linkSession) fail(err error) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// unusable returns why the link cannot carry another session after End, or nil.
func (s *linkSession) unusable() error {
	if s.reusable {
		return nil
	}
	if err := s.broken(); err != nil {
		return err
	}
	return errors.New("its session did not end cleanly")
}

// broken returns why the link cannot carry another session, or nil.
func (s *linkSession) broken() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.err
}

// Read returns the session's bytes, io.EOF at the peer's FIN and relay.ErrSessionReset at
// its RST. A timeout (a deadline, or the relay.Wire's answer that nothing is read ahead)
// leaves the link intact; any other error breaks it.
func (s *linkSession) Read(p []byte) (int, error) {
	n, err := s.l.fr.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, relay.ErrSessionReset) && !isTimeout(err) {
		s.fail(err)
	}
	return n, err
}

// isTimeout reports whether err is a timeout: a deadline, or the relay.Wire's answer that
// nothing is read ahead, which ends every step of a bulk copy from the session. Those come
// unwrapped, and are told without errors.As, whose target would be allocated at every
// step.
func isTimeout(err error) bool {
	if t, ok := err.(interface{ Timeout() bool }); ok {
		return t.Timeout()
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Write sends p in DATA frames, one TLS record each.
func (s *linkSession) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := min(len(p), maxFramePayload)
		s.mu.Lock()
		if s.buf == nil {
			s.buf = frameBuffers.Get().(*[]byte)
		}
		*s.buf = appendFrame((*s.buf)[:0], frameData, p[:n])
		err := s.writeFrameLocked(*s.buf)
		s.mu.Unlock()
		if err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	return total, nil
}

var _ relay.Framer = (*linkSession)(nil)

// FrameShape is a DATA frame's: a bulk copy from a socket reads its bytes straight into
// frames (relay.Framer), and WriteFrames sends them without copying them to frame them.
func (s *linkSession) FrameShape() (header, payload int) { return frameHeader, maxFramePayload }

// WriteFrames sends the n bytes laid out in b as DATA frames (relay.Framer), each header
// filled in here, each frame one TLS record as Write makes them.
func (s *linkSession) WriteFrames(b []byte, n int) (int, error) {
	total := 0
	for total < n {
		p := min(n-total, maxFramePayload)
		frame := b[:frameHeader+p]
		b = b[len(frame):]
		putFrameHeader(frame[:frameHeader], frameData, p)
		s.mu.Lock()
		err := s.writeFrameLocked(frame)
		s.mu.Unlock()
		if err != nil {
			return total, err
		}
		total += p
	}
	return total, nil
}

// writeFrameLocked writes one whole DATA frame, with s.mu held, unless the session's
// writes are over (its end went out, or a deadline in the past stopped them).
func (s *linkSession) writeFrameLocked(frame []byte) error {
	if s.sentEnd || s.stopped.Load() {
		return os.ErrDeadlineExceeded
	}
	_, err := s.l.tls.Write(frame)
	if err != nil {
		s.fail(err)
	}
	return err
}

// end sends this side's end frame, unless one went out already.
func (s *linkSession) end(typ byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endLocked(typ)
}

// endLocked is end with s.mu held.
func (s *linkSession) endLocked(typ byte) error {
	if s.sentEnd {
		return nil
	}
	s.sentEnd, s.sentFin = true, typ == frameFin
	_, err := s.l.tls.Write([]byte{typ, 0, 0})
	if err != nil {
		s.fail(err)
	}
	return err
}

// CloseWrite sends a FIN: this direction ended cleanly.
func (s *linkSession) CloseWrite() error { return s.end(frameFin) }

// Reset sends a RST: this side's socket was reset, or the relay cut it. It never waits
// for a DATA frame being written (the relay calls it with its lock held, and that write
// may wait for the peer): then the write is cut and the link is broken instead, which
// the peer passes on as a reset too. So is a reset after this side's FIN (a client that
// half-closed, then reset while the service still sends): no frame can follow a FIN, and
// the link, closed with a reset, makes the peer's writes fail and the peer reset its side.
func (s *linkSession) Reset() error {
	if !s.mu.TryLock() {
		s.fail(errors.New("reset while a frame was being written"))
		return s.l.tls.SetWriteDeadline(time.Unix(1, 0))
	}
	defer s.mu.Unlock()
	if s.sentFin {
		s.fail(errors.New("reset after this side's FIN"))
		return nil
	}
	return s.endLocked(frameRst)
}

// End finishes the session on the link: a RST when no end went out yet, then the wait
// for the peer's end, the rest of its data dropped. Afterwards reusable tells whether the
// link can carry the next session. The end of ctx (the program stops) leaves the link to
// be closed, also when it comes while End waits: a peer that does not answer holds a
// stop no longer than it takes to cut the wait.
func (s *linkSession) End(ctx context.Context) {
	defer s.release()
	if ctx.Err() != nil {
		s.fail(errors.New("stopping"))
		return
	}
	if s.broken() != nil {
		return
	}
	if err := s.l.tls.SetDeadline(time.Now().Add(sessionEndTimeout)); err != nil {
		s.fail(err)
		return
	}
	cut := context.AfterFunc(ctx, func() { _ = s.l.tls.SetDeadline(time.Unix(1, 0)) })
	err := s.finish()
	if !cut() { // the wait was cut: whatever it saw, the link goes
		s.fail(errors.New("stopping"))
		return
	}
	if err == nil {
		err = s.l.tls.SetDeadline(time.Time{})
	}
	if err != nil {
		s.fail(err)
		return
	}
	s.reusable = true
}

// finish sends this side's end, a RST unless one went out, and drops what the peer still
// sends up to its end, within the deadline End set.
func (s *linkSession) finish() error {
	if err := s.end(frameRst); err != nil {
		return err
	}
	if s.l.fr.ended() != 0 {
		return nil
	}
	b := frameBuffers.Get().(*[]byte)
	defer frameBuffers.Put(b)
	return s.l.fr.drain((*b)[:cap(*b)])
}

// release gives the session's frame buffer back.
func (s *linkSession) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf != nil {
		frameBuffers.Put(s.buf)
		s.buf = nil
	}
}

// Close closes the link under the session, raw: it cannot carry another.
func (s *linkSession) Close() error {
	s.fail(errors.New("closed"))
	return s.l.tcp.Close()
}

// NetConn returns the relay.Wire the TLS session runs over, so that Join copies the
// session in bulk as it does a TLS connection; a Session, it is never closed or reset
// there.
func (s *linkSession) NetConn() net.Conn {
	if rc, ok := s.l.tls.NetConn().(*recordConn); ok {
		return rc.Wire
	}
	return s.l.tls.NetConn()
}

func (s *linkSession) LocalAddr() net.Addr  { return s.l.tcp.LocalAddr() }
func (s *linkSession) RemoteAddr() net.Addr { return s.l.tcp.RemoteAddr() }

// SetDeadline sets both deadlines (see SetWriteDeadline).
func (s *linkSession) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the TLS connection's: a read that times out leaves it intact.
func (s *linkSession) SetReadDeadline(t time.Time) error { return s.l.tls.SetReadDeadline(t) }

// SetWriteDeadline with a time in the past stops the session's writes without breaking
// the link: a TLS write that times out would leave the link unusable, so the write in
// progress gets sessionEndTimeout to finish (the peer drains the session) and the next
// one fails at once. A link that cannot carry another session anyway (it broke, or the
// program stops) gets no such time: the write in progress, which may wait for a peer
// that reads nothing, is cut now, so a stop never waits for it.
func (s *linkSession) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() && !t.After(time.Now()) {
		s.stopped.Store(true)
		if s.stop.Err() == nil && s.broken() == nil {
			t = time.Now().Add(sessionEndTimeout)
		}
	}
	return s.l.tls.SetWriteDeadline(t)
}
