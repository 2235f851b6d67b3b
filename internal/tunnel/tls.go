package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/tlslink"
)

// The TLS layer of a link (listentwo --tls-key, connecttwo --tls-pin or --tls-ca). It runs
// on the TCP connection before the link handshake, which then runs inside it with its
// proofs bound to the session (tlslink.Exporter); after the link is taken, the relays copy
// through it. An idle link is still watched on its TCP connection: the relay's session
// ticket comes in its first flight, read with the greeting, and after the handshake
// neither side sends anything until the link is taken, so a readable socket still means
// an end.

// Words for a link with TLS on one side only, sent in the clear as an ERR line by the side
// that notices (listentwo) and logged by both.
const (
	errTLSAgentOnly = "connecttwo uses TLS (--tls-pin or --tls-ca), listentwo does not (no --tls-key)"
	errTLSRelayOnly = "listentwo uses TLS (--tls-key), connecttwo does not: give connecttwo --tls-pin (listentwo --print-pin prints it)"
)

// looksTLS reports whether b starts like a TLS handshake record (a ClientHello).
func looksTLS(b []byte) bool {
	return len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03
}

// refusePlain answers a link whose first bytes show it has TLS on the other side of what
// this relay has with an ERR line in the clear, for connecttwo to log, and returns the
// error the relay logs. It returns nil when the link's first bytes match the relay's mode.
func (r *Relay) refusePlain(c *net.TCPConn) error {
	first := peekNow(c, len(opening))
	switch {
	case r.cfg.TLS == nil && looksTLS(first):
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "ERR "+errTLSAgentOnly+"\n")
		return errors.New(errTLSAgentOnly)
	case r.cfg.TLS != nil && bytes.HasPrefix(first, []byte(protoName)):
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "ERR "+errTLSRelayOnly+"\n")
		return errors.New("connecttwo does not use TLS (no --tls-pin or --tls-ca), listentwo does (--tls-key)")
	}
	return nil
}

// serverTLS runs the relay's TLS handshake on a new link and returns the session and its
// exporter value.
func (r *Relay) serverTLS(ctx context.Context, c *net.TCPConn) (*tls.Conn, []byte, error) {
	tc := tls.Server(newRecordConn(relay.NewWire(c)), r.tlsConfig)
	if err := c.SetDeadline(time.Now().Add(r.cfg.HandshakeTimeout)); err != nil {
		return nil, nil, fmt.Errorf("setting handshake deadline: %w", err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, r.tlsFailure(err)
	}
	binding, err := tlslink.Exporter(tc.ConnectionState())
	if err != nil {
		return nil, nil, err
	}
	return tc, binding, nil
}

// tlsFailure says in words why a link's TLS handshake failed on the relay.
func (r *Relay) tlsFailure(err error) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return fmt.Errorf("%w (%q): not a TLS handshake", errNotOpening, clip(string(rh.RecordHeader[:])))
	}
	s := err.Error()
	if strings.Contains(s, "remote error: tls: ") {
		why := s[strings.Index(s, "remote error: tls: ")+len("remote error: "):]
		return fmt.Errorf("connecttwo refused this relay's certificate (%s): check that its --tls-pin is this relay's %s, or its --tls-ca and --tls-name", why, r.cfg.TLS.Pin)
	}
	return handshakeCut("TLS handshake", err)
}

// clientTLS runs connecttwo's TLS handshake on a new link and returns the session and its
// exporter value.
func (a *Agent) clientTLS(ctx context.Context, c *net.TCPConn) (*tls.Conn, []byte, error) {
	tc := tls.Client(newRecordConn(relay.NewWire(c)), a.tlsConfig)
	if err := c.SetDeadline(time.Now().Add(a.cfg.HandshakeTimeout)); err != nil {
		return nil, nil, fmt.Errorf("setting handshake deadline: %w", err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, clientTLSFailure(err)
	}
	binding, err := tlslink.Exporter(tc.ConnectionState())
	if err != nil {
		return nil, nil, err
	}
	return tc, binding, nil
}

// clientTLSFailure says in words why a link's TLS handshake failed on connecttwo.
func clientTLSFailure(err error) error {
	var pe *tlslink.PinError
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.As(err, &rh) && (bytes.HasPrefix(rh.RecordHeader[:], []byte("ERR ")) || bytes.HasPrefix(rh.RecordHeader[:], []byte("SHD-L"))):
		return errors.New("relay answered without TLS: " + errTLSAgentOnly)
	case errors.As(err, &rh):
		return fmt.Errorf("not a listentwo link port: it answered %q, not TLS", clip(string(rh.RecordHeader[:])))
	case errors.As(err, &cv):
		return fmt.Errorf("relay's certificate refused: %w", cv.Err)
	}
	return handshakeCut("TLS handshake", err)
}

// handshakeCut names a handshake failure; an end, reset or timeout of the connection is a
// cutError (the peer went away rather than disagreed).
func handshakeCut(what string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &cutError{fmt.Errorf("%s: connection closed", what)}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return &cutError{fmt.Errorf("%s: connection reset", what)}
	case errors.As(err, &ne) && ne.Timeout():
		return &cutError{fmt.Errorf("%s timed out", what)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// buffered returns, without waiting, the bytes that a TLS link already holds decrypted or
// received (a hello can arrive right behind the verdict and be read from the socket with
// it, where no wait on the socket would see it). It reads one byte, then whatever of the
// same record is left.
func buffered(rw net.Conn) ([]byte, error) {
	if err := rw.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return nil, err
	}
	defer rw.SetReadDeadline(time.Time{})
	var probe [1]byte
	n, err := rw.Read(probe[:])
	if n == 0 {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, firstRead)
	buf[0] = probe[0]
	m, _ := rw.Read(buf[1:])
	return buf[:1+m], nil
}

// relayPaired relays a taken link and its other end (the client on the relay, the service
// on connecttwo) both ways, half-closes passed on, and calls done with the counts for the
// log line. Two plain TCP connections go to the process's event loops, as tcp-pf's do:
// relayPaired returns at once, the relay holds no goroutine, and done runs on the loop.
// When either is a session on a TLS link (a link with --tls-key: a *linkSession),
// relay.Join copies in user space with the same close policy, on the calling goroutine,
// and done runs there; the session is ended by then (see linkSession.End), and the caller
// puts its link back or closes it.
// The end of ctx cuts the relay. A plain idle link's pair starts on its loop instead
// (pairOnLoop, loopLink.connected).
// counts hears of the bytes each way as they move (on the loop, or the Join's goroutines);
// trim hears of every Join, to give their buffers back once none has run for a while.
func relayPaired(ctx context.Context, loops *relay.Loops, trim *relay.Trimmer, client, server net.Conn, counts *connstats.Counters, done func(relay.Result)) {
	c, cok := client.(*net.TCPConn)
	s, sok := server.(*net.TCPConn)
	if cok && sok {
		loops.Start(ctx, c, s, relay.PairOptions{HalfClose: true, OnEnd: done, Progress: counts.Moved})
		return
	}
	done(relay.Join(ctx, client, server, relay.Options{HalfClose: true, Progress: counts.Moved, Trim: trim}))
}
