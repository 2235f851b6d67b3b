// Package tunnel serves a machine that cannot accept connections (A) through a reachable
// relay (B): listentwo's Relay on B pairs each client with an idle link, and connecttwo's
// Agent on A keeps a pool of such links open to B and connects each taken one to the hidden
// service. Both ends of the wire protocol live in this file: the link greeting, the
// HMAC-SHA256 challenge and response, and the PROXY v1 hello. docs/tunnel.md describes it.
package tunnel

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
)

// The link handshake, run once on every new link before it joins the pool; each message is
// one LF-terminated ASCII line:
//
//	A -> B  opening   "SHD-LINK/2\n"
//	B -> A  greeting  "SHD-LINK/2 hello=proxy|none auth=hmac-sha256|none nonce=<64 hex>\n"
//	A -> B  reply     "SHD-LINK/2 hello=proxy|none auth=hmac-sha256|none nonce=<64 hex> mac=<64 hex>|-\n"
//	B -> A  verdict   "OK mac=<64 hex>|-\n"  or  "ERR <reason>\n" (then B closes)
//
// On a TLS link the greeting and the reply carry one more field after the nonce,
// "link=frames": the link carries one session after another in frames (frame.go). A
// plain link's lines have no such field, and both sides refuse a link whose other side
// disagrees.
//
// A speaks first, as soon as its connect completes, so that B can tell a real agent from a
// stranger that connects and stays silent before it spends anything on it: B sends no
// greeting until the opening has arrived.
//
// With a secret K on both sides, the reply's mac is
// HMAC-SHA256(K, "shd-tcp-tools link v1 client\x00" || greeting || reply up to " mac=") and the
// verdict's mac is HMAC-SHA256(K, "shd-tcp-tools link v1 server\x00" || greeting || reply).
// B's nonce is fresh for every link, so a recorded reply proves nothing on a new link; A's
// nonce is fresh too, so a recorded verdict cannot fool A into trusting a fake relay.
const (
	protoName   = "SHD-LINK/2"
	opening     = protoName + "\n"
	labelClient = "shd-tcp-tools link v1 client\x00"
	labelServer = "shd-tcp-tools link v1 server\x00"
	nonceLen    = 32
	macLen      = sha256.Size
	// maxLine bounds every handshake line; the longest valid one is the reply (~205 bytes).
	maxLine = 256
	// maxHello is the longest PROXY v1 header the protocol allows, CRLF included.
	maxHello = 107
)

// DefaultHandshakeTimeout bounds the link handshake after its opening, and the read of a
// hello.
const DefaultHandshakeTimeout = 5 * time.Second

// errNotOpening is what the relay finds when a link's first line is not the opening.
var errNotOpening = errors.New("not a link: its first line is not the opening")

// cutError is a link that ended, was reset or timed out in the middle of a handshake: the
// peer went away, rather than disagreeing with what it was sent.
type cutError struct{ err error }

func (e *cutError) Error() string { return e.err.Error() }
func (e *cutError) Unwrap() error { return e.err }

// isCut reports whether err is a handshake cut short (see cutError).
func isCut(err error) bool {
	var c *cutError
	return errors.As(err, &c)
}

// linkParams are one side's settings for the handshake.
type linkParams struct {
	hello   bool      // this side uses PROXY hellos
	secret  []byte    // nil: no authentication
	rand    io.Reader // nonce source
	timeout time.Duration
	// openBy, on the relay, is when the opening must have arrived; zero: within timeout.
	openBy time.Time
	// binding is the TLS session's exporter value (tlslink.Exporter), mixed into both
	// proofs so that they hold in this session only; nil without TLS.
	binding []byte
	// frames: the link carries sessions in frames, one after another (TLS links).
	frames bool
}

// serverHooks are what serverHandshake asks the relay along the way. opened is called once
// the opening has arrived, before the greeting; admit, once the peer has proved itself,
// decides whether the link may join the pool; release undoes a successful admit when the
// verdict cannot be sent. An error from opened or admit refuses the link.
type serverHooks struct {
	opened, admit func() error
	release       func()
}

// offer is the mode and nonce part shared by the greeting and the reply.
type offer struct {
	hello  bool
	auth   bool
	nonce  [nonceLen]byte
	frames bool
}

// framesField is the field of a greeting or reply on a link that carries its sessions in
// frames.
const framesField = "link=frames"

func (o offer) text() string {
	hello, auth := "none", "none"
	if o.hello {
		hello = "proxy"
	}
	if o.auth {
		auth = "hmac-sha256"
	}
	s := fmt.Sprintf("%s hello=%s auth=%s nonce=%s", protoName, hello, auth, hex.EncodeToString(o.nonce[:]))
	if o.frames {
		s += " " + framesField
	}
	return s
}

// parseOffer reads the four fields the greeting and the reply start with; rest is what
// follows them (the reply's mac field).
func parseOffer(fields []string) (o offer, rest []string, err error) {
	if len(fields) < 4 || fields[0] != protoName {
		return o, nil, errors.New("not a link handshake (wrong protocol or version)")
	}
	switch fields[1] {
	case "hello=proxy":
		o.hello = true
	case "hello=none":
	default:
		return o, nil, fmt.Errorf("bad hello field %q", clip(fields[1]))
	}
	switch fields[2] {
	case "auth=hmac-sha256":
		o.auth = true
	case "auth=none":
	default:
		return o, nil, fmt.Errorf("bad auth field %q", clip(fields[2]))
	}
	n, ok := strings.CutPrefix(fields[3], "nonce=")
	if !ok || len(n) != 2*nonceLen {
		return o, nil, errors.New("bad nonce field")
	}
	if _, err := hex.Decode(o.nonce[:], []byte(n)); err != nil {
		return o, nil, errors.New("bad nonce field")
	}
	rest = fields[4:]
	if len(rest) > 0 && rest[0] == framesField {
		o.frames, rest = true, rest[1:]
	}
	return o, rest, nil
}

// framesName names a link mode for log lines.
func framesName(frames bool) string {
	if frames {
		return "carries one client after another on each TLS link (" + framesField + ")"
	}
	return "carries one client per TLS link (no " + framesField + ")"
}

func parseGreeting(line []byte) (offer, error) {
	o, rest, err := parseOffer(strings.Split(strings.TrimSuffix(string(line), "\n"), " "))
	if err == nil && len(rest) != 0 {
		err = errors.New("extra fields in greeting")
	}
	return o, err
}

// parseReply returns the reply's offer, its mac (nil for "-"), and the line up to the mac
// field, which is what the mac covers.
func parseReply(line []byte) (o offer, mac []byte, body []byte, err error) {
	s := strings.TrimSuffix(string(line), "\n")
	i := strings.LastIndex(s, " mac=")
	if i < 0 {
		return o, nil, nil, errors.New("reply has no mac field")
	}
	o, rest, err := parseOffer(strings.Split(s[:i], " "))
	if err != nil {
		return o, nil, nil, err
	}
	if len(rest) != 0 {
		return o, nil, nil, errors.New("extra fields in reply")
	}
	if m := s[i+len(" mac="):]; m != "-" {
		mac, err = hex.DecodeString(m)
		if err != nil || len(mac) != macLen {
			return o, nil, nil, errors.New("bad mac field")
		}
	}
	return o, mac, line[:i], nil
}

func linkMAC(secret []byte, label string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func macText(mac []byte) string {
	if mac == nil {
		return "-"
	}
	return hex.EncodeToString(mac)
}

// readErr names a deadline as a timeout and keeps other causes short.
func readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("handshake timed out")
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// clip shortens text that came from the peer before it goes into a log line.
func clip(s string) string { return clipTo(s, 64) }

// clipTo is clip for text of up to max characters, such as a reason the peer sends.
func clipTo(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// modeName names a hello setting for log lines.
func modeName(hello bool, flag string) string {
	if hello {
		return "uses hellos (" + flag + ")"
	}
	return "does not use hellos (no " + flag + ")"
}

// ErrPoolFull is what the relay answers a link that completes its handshake while the idle
// pool already holds its maximum.
var ErrPoolFull = errors.New("idle link pool is full")

// serverHandshake runs listentwo's side on a new link over c, blocking: opening, greeting,
// reply, verdict, calling h along the way (the TLS links' path; a plain link's handshake
// runs on an event loop, see linkShake). A nil error means the link is ready.
func serverHandshake(c net.Conn, p linkParams, h serverHooks) error {
	s := newServerShake(time.Now(), p, h)
	buf := make([]byte, maxLine)
	var due time.Time
	for {
		if d := s.due(); !d.Equal(due) {
			if err := c.SetDeadline(d); err != nil {
				return fmt.Errorf("setting handshake deadline: %w", err)
			}
			due = d
		}
		n, err := c.Read(buf[:s.room()])
		if n == 0 {
			if err == nil {
				continue
			}
			return s.cut(err)
		}
		send, done, ferr := s.feed(buf[:n])
		if len(send) > 0 {
			if _, werr := c.Write(send); werr != nil && ferr == nil {
				return s.sendFailed(werr)
			}
		}
		switch {
		case ferr != nil:
			return ferr
		case done:
			if err := c.SetDeadline(time.Time{}); err != nil {
				h.release()
				return fmt.Errorf("clearing handshake deadline: %w", err)
			}
			return nil
		}
	}
}

// Steps of a serverShake.
const (
	shakeOpening = iota // waiting for the opening
	shakeReply          // the greeting is out, waiting for the reply
	shakeDone           // the verdict is out, or the link refused
)

// serverShake is listentwo's side of the link handshake as a pure state machine with no
// socket of its own: its driver reads at most room() bytes at a time, feeds what arrived,
// sends what feed answers, and ends the link when it has not heard enough by due(). The
// blocking path of TLS links (serverHandshake) and the event loop that serves a plain link
// (linkShake) drive this one machine, so the limits are the same on both: the opening by
// openBy, the rest within the timeout, lines of at most maxLine bytes, nothing after the
// opening or the reply, ERR lines for a bad reply.
type serverShake struct {
	p        linkParams
	h        serverHooks
	step     int
	deadline time.Time // the whole handshake
	openBy   time.Time // the opening
	line     []byte    // the line read so far
	greeting []byte
}

// newServerShake starts the handshake at now.
func newServerShake(now time.Time, p linkParams, h serverHooks) *serverShake {
	s := &serverShake{p: p, h: h, deadline: now.Add(p.timeout)}
	s.openBy = s.deadline
	if !p.openBy.IsZero() && p.openBy.Before(s.deadline) {
		s.openBy = p.openBy
	}
	return s
}

// due is when the line the machine waits for must have arrived.
func (s *serverShake) due() time.Time {
	if s.step == shakeOpening {
		return s.openBy
	}
	return s.deadline
}

// room is how many more bytes the current line may take: the most the driver may read.
// It is never 0 while the machine waits, since a full line without its LF is refused.
func (s *serverShake) room() int { return maxLine - len(s.line) }

// what names the line the machine waits for, for errors.
func (s *serverShake) what() string {
	if s.step == shakeOpening {
		return "reading opening"
	}
	return "reading reply"
}

// cut is the error for a read that found the end of the connection (io.EOF) or failed
// (a deadline, a reset) before the line was complete.
func (s *serverShake) cut(err error) error { return cutIn(s.what(), err) }

// cutIn is the error of a handshake whose read of a line (what) found the end of the
// connection (io.EOF) or failed (a deadline, a reset): a cut link, on either side.
func cutIn(what string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w", what, &cutError{errClosedInHandshake})
	}
	return fmt.Errorf("%s: %w", what, &cutError{readErr(err)})
}

// errClosedInHandshake is a link that its peer closed before the handshake was over.
var errClosedInHandshake = errors.New("connection closed during handshake")

// addLine gathers a handshake line in *line from the bytes b that arrived: the line (LF
// included) and what came after it once its LF is in, nil and nil before; an error
// (what names the line) once maxLine bytes hold no LF. The line logic of both sides'
// machines; *line starts over after a line, so the line returned stays intact.
func addLine(line *[]byte, b []byte, what string) (got, rest []byte, err error) {
	*line = append(*line, b...)
	i := bytes.IndexByte(*line, '\n')
	if i < 0 {
		if len(*line) >= maxLine {
			return nil, nil, fmt.Errorf("%s: line longer than %d bytes", what, maxLine)
		}
		return nil, nil, nil
	}
	got, rest = (*line)[:i+1], (*line)[i+1:]
	*line = nil
	return got, rest, nil
}

// sendFailed is the error for a send of what feed answered that failed; a failed verdict
// undoes the link's admission (release).
func (s *serverShake) sendFailed(err error) error {
	if s.step == shakeDone {
		s.h.release()
		return fmt.Errorf("sending verdict: %w", readErr(err))
	}
	return fmt.Errorf("sending greeting: %w", readErr(err))
}

// feed takes bytes that arrived on the link and returns what to send (the greeting, the
// verdict, or an ERR line with a non-nil err) and whether the handshake is over: done
// with a nil err means the link is ready once send is sent. A non-nil err refuses the
// link.
func (s *serverShake) feed(b []byte) (send []byte, done bool, err error) {
	line, rest, err := addLine(&s.line, b, s.what())
	switch {
	case err != nil:
		s.step = shakeDone
		return nil, true, err
	case line == nil:
		return nil, false, nil
	}
	if s.step == shakeOpening {
		send, err = s.opened(line, rest)
		return send, err != nil, err
	}
	return s.replied(line, rest)
}

// opened checks the opening and returns the greeting.
func (s *serverShake) opened(open, extra []byte) ([]byte, error) {
	s.step = shakeDone // unless all is well
	switch {
	case string(open) != opening:
		return nil, fmt.Errorf("%w (%q)", errNotOpening, clip(string(open)))
	case len(extra) != 0:
		return nil, errors.New("unexpected data after the opening")
	}
	if s.h.opened != nil {
		if err := s.h.opened(); err != nil {
			return nil, err
		}
	}
	g := offer{hello: s.p.hello, auth: s.p.secret != nil, frames: s.p.frames}
	if _, err := io.ReadFull(s.p.rand, g.nonce[:]); err != nil {
		return nil, fmt.Errorf("making a nonce: %w", err)
	}
	s.greeting = []byte(g.text() + "\n")
	s.step = shakeReply
	return s.greeting, nil
}

// replied checks the reply and returns the verdict.
func (s *serverShake) replied(line, rest []byte) (send []byte, done bool, err error) {
	s.step = shakeDone
	refuse := func(err error) ([]byte, bool, error) {
		return []byte("ERR " + err.Error() + "\n"), true, err
	}
	if len(rest) != 0 {
		return refuse(errors.New("unexpected data after the reply"))
	}
	p := s.p
	r, mac, body, err := parseReply(line)
	if err != nil {
		return refuse(fmt.Errorf("malformed reply: %w", err))
	}
	switch {
	case r.hello != p.hello:
		return refuse(fmt.Errorf("hello mismatch: connecttwo %s, listentwo %s",
			modeName(r.hello, "--hello-from-src"), modeName(p.hello, "--hello-dst")))
	case r.frames != p.frames:
		return refuse(fmt.Errorf("link mode mismatch: connecttwo %s, listentwo %s; run the same version of both",
			framesName(r.frames), framesName(p.frames)))
	case p.secret != nil && !r.auth:
		return refuse(errors.New("auth mismatch: listentwo has --secret-file, connecttwo has none"))
	case p.secret == nil && r.auth:
		return refuse(errors.New("auth mismatch: connecttwo has --secret-file, listentwo has none"))
	case p.secret != nil:
		want := linkMAC(p.secret, labelClient, p.binding, s.greeting, body)
		if mac == nil || !hmac.Equal(mac, want) {
			if p.binding != nil {
				return refuse(errors.New("authentication failed: wrong secret, replayed exchange, or a proof made in another TLS session (a relay in the middle)"))
			}
			return refuse(errors.New("authentication failed: wrong secret or replayed exchange"))
		}
	case mac != nil:
		return refuse(errors.New("malformed reply: mac without authentication"))
	}
	if err := s.h.admit(); err != nil {
		return refuse(err)
	}
	var proof []byte
	if p.secret != nil {
		proof = linkMAC(p.secret, labelServer, p.binding, s.greeting, line)
	}
	return []byte("OK mac=" + macText(proof) + "\n"), true, nil
}

// clientHandshake runs connecttwo's side on a new link over c, blocking (the TLS links'
// path; a plain link's handshake runs on an event loop, see dial.go): it sends the opening
// and drives a clientShake on what it reads. It returns the bytes that arrived after the
// verdict in the same read (the start of a hello or of client data, if the link was taken
// at once), which the caller must treat as the link's first bytes.
func clientHandshake(c net.Conn, p linkParams) (rest []byte, err error) {
	if err := c.SetDeadline(time.Now().Add(p.timeout)); err != nil {
		return nil, fmt.Errorf("setting handshake deadline: %w", err)
	}
	if _, err := io.WriteString(c, opening); err != nil {
		return nil, sendErr("opening", err)
	}
	s := clientShake{p: p}
	buf := make([]byte, maxLine)
	for {
		n, err := c.Read(buf[:s.room()])
		if n == 0 {
			if err == nil {
				continue
			}
			return nil, s.cut(err)
		}
		send, done, rest, ferr := s.feed(buf[:n])
		if len(send) > 0 {
			if _, werr := c.Write(send); werr != nil && ferr == nil {
				return nil, sendErr("reply", werr)
			}
		}
		switch {
		case ferr != nil:
			return nil, ferr
		case done:
			if err := c.SetDeadline(time.Time{}); err != nil {
				return nil, fmt.Errorf("clearing handshake deadline: %w", err)
			}
			return rest, nil
		}
	}
}

// sendErr is the error of a handshake line (what) that could not be sent: a cut link.
func sendErr(what string, err error) error {
	return fmt.Errorf("sending %s: %w", what, &cutError{readErr(err)})
}

// Steps of a clientShake.
const (
	shakeGreeting = iota // the opening is out, waiting for the greeting
	shakeVerdict         // the reply is out, waiting for the verdict
	shakeOver            // the verdict is in, or the link failed
)

// clientShake is connecttwo's side of the link handshake as a pure state machine with no
// socket of its own, as serverShake is listentwo's: its driver sends the opening, reads at
// most room() bytes at a time, feeds what arrived, sends what feed answers, and ends the
// link with cut when a read fails or the handshake's deadline passes. The blocking path of
// TLS links (clientHandshake) and the event loop that opens a plain link (dial.go) drive
// this one machine: the same words, checks, proofs and limits on both.
type clientShake struct {
	p               linkParams
	step            int
	line            []byte // the line read so far
	greeting, reply []byte // kept for the verdict's proof
}

// room is how many more bytes the current line may take: the most the driver may read.
func (s *clientShake) room() int { return maxLine - len(s.line) }

// what names the line the machine waits for, for errors.
func (s *clientShake) what() string {
	if s.step == shakeGreeting {
		return "reading greeting"
	}
	return "reading verdict"
}

// cut is the error for a read that found the end of the connection (io.EOF) or failed
// (a deadline, a reset) before the line was complete.
func (s *clientShake) cut(err error) error { return cutIn(s.what(), err) }

// feed takes bytes that arrived on the link and returns what to send (the reply) and
// whether the handshake is over: done with a nil err means the link is up, rest holding
// what came after the verdict; a non-nil err ends the link, after send is sent when there
// is one (a mode mismatch: the reply tells the relay, which logs it too).
func (s *clientShake) feed(b []byte) (send []byte, done bool, rest []byte, err error) {
	line, rest, err := addLine(&s.line, b, s.what())
	switch {
	case err != nil:
		s.step = shakeOver
		return nil, true, nil, err
	case line == nil:
		return nil, false, nil, nil
	}
	if s.step == shakeGreeting {
		send, err = s.greeted(line, rest)
		if err != nil {
			s.step = shakeOver
			return send, true, nil, err
		}
		s.step = shakeVerdict
		return send, false, nil, nil
	}
	s.step = shakeOver
	if err := s.judged(line); err != nil {
		return nil, true, nil, err
	}
	return nil, true, rest, nil
}

// greeted checks the greeting (extra: what came after it) and returns the reply; an error
// with a reply is a mismatch the relay is told of, one without ends the link at once.
func (s *clientShake) greeted(greeting, extra []byte) ([]byte, error) {
	p := s.p
	if reason, ok := strings.CutPrefix(string(greeting), "ERR "); ok {
		return nil, fmt.Errorf("relay refused the link: %s", clipTo(strings.TrimSuffix(reason, "\n"), maxLine))
	}
	if len(extra) != 0 {
		return nil, errors.New("relay sent data after its greeting")
	}
	g, err := parseGreeting(greeting)
	if err != nil {
		return nil, fmt.Errorf("not a listentwo link port: %w", err)
	}
	r := offer{hello: p.hello, auth: p.secret != nil, frames: p.frames}
	if _, err := io.ReadFull(p.rand, r.nonce[:]); err != nil {
		return nil, fmt.Errorf("making a nonce: %w", err)
	}
	body := []byte(r.text())
	var mismatch error
	switch {
	case g.hello != p.hello:
		mismatch = fmt.Errorf("hello mismatch: listentwo %s, connecttwo %s",
			modeName(g.hello, "--hello-dst"), modeName(p.hello, "--hello-from-src"))
	case g.frames != p.frames:
		mismatch = fmt.Errorf("link mode mismatch: listentwo %s, connecttwo %s; run the same version of both",
			framesName(g.frames), framesName(p.frames))
	case g.auth && p.secret == nil:
		mismatch = errors.New("auth mismatch: listentwo has --secret-file, connecttwo has none")
	case !g.auth && p.secret != nil:
		mismatch = errors.New("auth mismatch: connecttwo has --secret-file, listentwo has none; refusing a relay that cannot prove the secret")
	}
	var mac []byte
	if mismatch == nil && p.secret != nil {
		mac = linkMAC(p.secret, labelClient, p.binding, greeting, body)
	}
	s.greeting = greeting
	s.reply = append(body, []byte(" mac="+macText(mac)+"\n")...)
	return s.reply, mismatch
}

// judged checks the verdict: nil when the relay let the link in (and, with a secret,
// proved it).
func (s *clientShake) judged(verdict []byte) error {
	v := strings.TrimSuffix(string(verdict), "\n")
	if reason, ok := strings.CutPrefix(v, "ERR "); ok {
		return fmt.Errorf("relay refused the link: %s", clipTo(reason, maxLine))
	}
	m, ok := strings.CutPrefix(v, "OK mac=")
	if !ok {
		return fmt.Errorf("bad verdict %q", clip(v))
	}
	if s.p.secret != nil {
		got, err := hex.DecodeString(m)
		if err != nil || !hmac.Equal(got, linkMAC(s.p.secret, labelServer, s.p.binding, s.greeting, s.reply)) {
			return errors.New("relay failed to prove the secret: wrong secret or a fake relay")
		}
	} else if m != "-" {
		return fmt.Errorf("bad verdict %q", clip(v))
	}
	return nil
}

// helloFor returns the PROXY v1 header that names client's peer (the source) and the
// relay address it connected to (the destination).
func helloFor(client net.Conn) ([]byte, error) {
	return helloFrom(client.RemoteAddr(), client.LocalAddr())
}

// helloFrom returns the PROXY v1 header that names a client at src that connected to dst.
func helloFrom(src, dst net.Addr) ([]byte, error) {
	h := proxyproto.HeaderProxyFromAddrs(1, src, dst)
	if h.Command != proxyproto.PROXY {
		return nil, fmt.Errorf("no PROXY header for %s -> %s", src, dst)
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("formatting PROXY header: %w", err)
	}
	return b, nil
}

// readHello reads a PROXY v1 header from link, starting with the bytes in first. It reads
// byte by byte once first is used up, so nothing past the header's CRLF is consumed; bytes
// after the header that were already in first come back in rest for the caller to replay.
func readHello(link net.Conn, first []byte, timeout time.Duration) (h *proxyproto.Header, raw, rest []byte, err error) {
	buf := append(make([]byte, 0, maxHello), first...)
	end := bytes.Index(buf, []byte("\r\n"))
	if end < 0 && len(buf) < maxHello {
		if err := link.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, nil, nil, fmt.Errorf("setting hello deadline: %w", err)
		}
		var b [1]byte
		for end < 0 && len(buf) < maxHello {
			if _, err := io.ReadFull(link, b[:]); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, nil, nil, errors.New("reading hello: link closed")
				}
				return nil, nil, nil, fmt.Errorf("reading hello: %w", readErr(err))
			}
			buf = append(buf, b[0])
			if b[0] == '\n' && len(buf) >= 2 && buf[len(buf)-2] == '\r' {
				end = len(buf) - 2
			}
		}
		if err := link.SetReadDeadline(time.Time{}); err != nil {
			return nil, nil, nil, fmt.Errorf("clearing hello deadline: %w", err)
		}
	}
	if end < 0 || end+2 > maxHello {
		return nil, nil, nil, fmt.Errorf("hello is not a PROXY v1 header: %q", clip(string(buf[:min(len(buf), 32)])))
	}
	raw, rest = buf[:end+2], buf[end+2:]
	h, err = parseHello(raw)
	if err != nil {
		return nil, nil, nil, err
	}
	return h, raw, rest, nil
}

// parseHello parses exactly one PROXY v1 header for TCP over IPv4 or IPv6.
func parseHello(raw []byte) (*proxyproto.Header, error) {
	if !bytes.HasPrefix(raw, []byte("PROXY ")) {
		return nil, fmt.Errorf("hello is not a PROXY v1 header: %q", clip(string(raw[:min(len(raw), 32)])))
	}
	r := bufio.NewReaderSize(bytes.NewReader(raw), 256)
	h, err := proxyproto.Read(r)
	if err != nil {
		return nil, fmt.Errorf("bad PROXY header %q: %w", clip(string(raw)), err)
	}
	if r.Buffered() != 0 {
		return nil, fmt.Errorf("bad PROXY header %q: trailing bytes", clip(string(raw)))
	}
	if h.Version != 1 || h.Command != proxyproto.PROXY ||
		(h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6) {
		return nil, fmt.Errorf("PROXY header %q is not TCP4 or TCP6", clip(string(raw)))
	}
	return h, nil
}
