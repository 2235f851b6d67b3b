package testkit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/sock"
)

// LogBuf collects a log and lets a test wait for lines. Safe for simultaneous use.
type LogBuf struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

// NewLogBuf returns an empty LogBuf.
func NewLogBuf() *LogBuf { return &LogBuf{changed: make(chan struct{})} }

// Write appends p and wakes the waiters.
func (l *LogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *LogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Count returns how many lines match the regular expression re.
func (l *LogBuf) Count(re string) int {
	return len(regexp.MustCompile("(?m)"+re).FindAllStringIndex(l.String(), -1))
}

// Find returns the submatches of the first line that matches re, or nil.
func (l *LogBuf) Find(re string) []string {
	return regexp.MustCompile("(?m)" + re).FindStringSubmatch(l.String())
}

// WaitFor waits until n lines match re (multi-line mode: ^ and $ are line ends), or fails
// the test after d. It wakes on every write, without polling.
func (l *LogBuf) WaitFor(t testing.TB, re string, n int, d time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile("(?m)" + re)
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		text := l.buf.String()
		ch := l.changed
		l.mu.Unlock()
		if len(rx.FindAllStringIndex(text, -1)) >= n {
			return rx.FindStringSubmatch(text)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no %d log lines matching %q within %v; log:\n%s", n, re, d, l.String())
		}
	}
}

// Dropped adds up the counts of the log's "dropped N log lines" lines: what a tool could not
// write while its stderr was full.
func (l *LogBuf) Dropped() int {
	n := 0
	for _, m := range regexp.MustCompile(`(?m) dropped (\d+) log lines`).FindAllStringSubmatch(l.String(), -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n
}

// WaitUntil checks cond every 5 ms until it holds, or fails the test after d.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// Listen opens a TCP listener on addr ("127.0.0.1:0", "[::1]:0") or fails the test.
func Listen(t testing.TB, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln.(*net.TCPListener)
}

// Backend is a loopback TCP server that counts its accepts and runs a handler on each
// connection, on its own goroutine. It stops when the test ends.
type Backend struct {
	ln *net.TCPListener
	// Accepts counts the connections accepted so far.
	Accepts atomic.Int64
	wg      sync.WaitGroup
}

// Addr returns the backend's HOST:PORT.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Port returns the backend's port.
func (b *Backend) Port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// StartBackend listens on listen and runs handler for every connection, closing the
// connection when handler returns.
func StartBackend(t testing.TB, listen string, handler func(c *net.TCPConn)) *Backend {
	t.Helper()
	return Serve(t, Listen(t, listen), handler)
}

// Serve is StartBackend on a listener the test opened (in a network namespace, say).
func Serve(t testing.TB, ln *net.TCPListener, handler func(c *net.TCPConn)) *Backend {
	t.Helper()
	b := &Backend{ln: ln}
	b.wg.Go(func() {
		for {
			c, err := b.ln.AcceptTCP()
			if err != nil {
				return
			}
			b.Accepts.Add(1)
			b.wg.Go(func() {
				defer c.Close()
				handler(c)
			})
		}
	})
	t.Cleanup(func() {
		b.ln.Close()
		b.wg.Wait()
	})
	return b
}

// Echo is a Backend handler that sends back everything it reads, then half-closes.
func Echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

// Stream is a reproducible pseudo-random byte stream that never ends.
type Stream struct{ r *rand.ChaCha8 }

// NewStream returns the stream for seed.
func NewStream(seed uint64) *Stream {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &Stream{r: rand.NewChaCha8(s)}
}

// Read fills p.
func (s *Stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// Digest is the length and SHA-256 of some bytes.
type Digest struct {
	N   int64
	Sum [32]byte
}

func (d Digest) String() string { return fmt.Sprintf("%d bytes, sha256 %x...", d.N, d.Sum[:8]) }

// Digester hashes what is written to it.
type Digester struct {
	n int64
	h hash.Hash
}

// NewDigester returns an empty Digester.
func NewDigester() *Digester { return &Digester{h: sha256.New()} }

// Write hashes p.
func (d *Digester) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return d.h.Write(p)
}

// Digest returns the digest of what was written.
func (d *Digester) Digest() Digest {
	var g Digest
	g.N = d.n
	copy(g.Sum[:], d.h.Sum(nil))
	return g
}

// Send writes n bytes of stream seed to w and returns the digest of what it wrote.
func Send(w io.Writer, seed uint64, n int64) (Digest, error) {
	d := NewDigester()
	_, err := io.Copy(io.MultiWriter(w, d), io.LimitReader(NewStream(seed), n))
	return d.Digest(), err
}

// Expected returns the digest of n bytes of stream seed.
func Expected(seed uint64, n int64) Digest {
	d := NewDigester()
	_, _ = io.Copy(d, io.LimitReader(NewStream(seed), n))
	return d.Digest()
}

// Receive reads r to its end and returns the digest of what came.
func Receive(r io.Reader) (Digest, error) {
	d := NewDigester()
	_, err := io.Copy(d, r)
	return d.Digest(), err
}

// Dial connects to addr (closed when the test ends) or fails the test.
func Dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	return DialFrom(t, "", addr)
}

// DialFrom connects to addr from the local address local ("" for any).
func DialFrom(t testing.TB, local, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// RoundTrip sends n bytes of stream seed on c while reading n bytes back, and fails the
// test unless what came back is what was sent.
func RoundTrip(t testing.TB, c net.Conn, seed uint64, n int64) {
	t.Helper()
	type sent struct {
		d   Digest
		err error
	}
	sc := make(chan sent, 1)
	go func() {
		d, err := Send(c, seed, n)
		sc <- sent{d, err}
	}()
	got, err := Receive(io.LimitReader(c, n))
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	s := <-sc
	if s.err != nil {
		t.Fatalf("sending: %v", s.err)
	}
	if got != s.d || got.N != n {
		t.Fatalf("echo: got %v, sent %v", got, s.d)
	}
}

// EchoTrip sends n bytes of stream seed to addr on a new connection and checks that the
// same n bytes come back, all within d, then closes the connection; with halfClose it
// half-closes its side once everything is sent and wants the end of the stream after the
// echo. It returns what went wrong, for tests whose clients run on goroutines of their own.
func EchoTrip(addr string, seed uint64, n int64, d time.Duration, halfClose bool) error {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	sent := make(chan error, 1)
	go func() {
		_, err := Send(c, seed, n)
		if err == nil && halfClose {
			err = c.(*net.TCPConn).CloseWrite()
		}
		sent <- err
	}()
	var r io.Reader = io.LimitReader(c, n)
	if halfClose {
		r = c
	}
	got, err := Receive(r)
	if serr := <-sent; serr != nil {
		return fmt.Errorf("sending: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if want := Expected(seed, n); got != want {
		return fmt.Errorf("echo %v, want %v", got, want)
	}
	return nil
}

// NeedProgram returns the path of the installed program name (searched in PATH, then in
// /usr/sbin and /usr/local/sbin, where Debian puts daemons), or skips the test, saying so,
// when it is not installed.
func NeedProgram(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skipf("%s is not installed", name)
	return ""
}

// FreePort returns a loopback TCP port (on host, "127.0.0.1" or "::1") that was free a
// moment ago, for a program that cannot be handed a listener.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	ln := Listen(t, net.JoinHostPort(host, "0"))
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Proxied is what a ProxyBackend got on one connection: the PROXY header, as go-proxyproto
// reads it, and the digest of every byte after it.
type Proxied struct {
	Header *proxyproto.Header
	Digest Digest
	Err    error
}

// ProxyBackend is a destination that reads a PROXY header and then everything after it.
type ProxyBackend struct {
	*Backend
	got chan Proxied
}

// StartProxyBackend starts a ProxyBackend on listen until the test ends.
func StartProxyBackend(t testing.TB, listen string) *ProxyBackend {
	t.Helper()
	pb := &ProxyBackend{got: make(chan Proxied, 16)}
	pb.Backend = StartBackend(t, listen, func(c *net.TCPConn) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			pb.got <- Proxied{Err: err}
			return
		}
		d, err := Receive(r)
		pb.got <- Proxied{Header: h, Digest: d, Err: err}
	})
	return pb
}

// Next returns what the next connection brought, failing the test after 10 s.
func (pb *ProxyBackend) Next(t testing.TB) Proxied {
	t.Helper()
	select {
	case p := <-pb.got:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("the destination got no connection within 10s")
		return Proxied{}
	}
}

// SharedPort returns a TCP port that was free a moment ago on every one of addrs, for a
// test that needs one port on several addresses (a live listener on 127.0.0.1 and a dead
// one on [::1], say). It is taken below the ephemeral range (32768 and up on Linux), so
// that no outgoing connection of another test holds it on one of them.
func SharedPort(t testing.TB, addrs ...netip.Addr) uint16 {
	t.Helper()
	for range 100 {
		port := uint16(20000 + rand.IntN(12000))
		free := true
		for _, a := range addrs {
			ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, port)))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return port
		}
	}
	t.Fatalf("no port free on all of %v in 100 tries", addrs)
	return 0
}

// Blackhole returns the address of a listener whose accept queue is full, so a further
// connection attempt gets no answer and times out.
func Blackhole(t testing.TB) string {
	t.Helper()
	return BlackholeAt(t, netip.MustParseAddrPort("127.0.0.1:0")).String()
}

// BlackholeAt is Blackhole at a given address and port (port 0: any free one), on IPv4 or
// IPv6: say, [::1] at the port a live listener on 127.0.0.1 has, for a host whose IPv6
// address is dead.
func BlackholeAt(t testing.TB, at netip.AddrPort) netip.AddrPort {
	t.Helper()
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: at.Addr().As16(), Port: int(at.Port())}
	if at.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: at.Addr().As4(), Port: int(at.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "blackhole")
	t.Cleanup(func() { f.Close() })
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatalf("binding a blackhole to %v: %v", at, err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch got := got.(type) {
	case *unix.SockaddrInet4:
		at = netip.AddrPortFrom(at.Addr(), uint16(got.Port))
	case *unix.SockaddrInet6:
		at = netip.AddrPortFrom(at.Addr(), uint16(got.Port))
	}
	// Fill the queue: with a backlog of 0 the kernel queues one connection, then drops SYNs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", at.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i == 8 {
			t.Fatal("the accept queue of a backlog-0 listener does not fill")
		}
	}
	return at
}

// ReadEnd is how a Sink's connection ended: the bytes read and the error that ended the
// reading (io.EOF for a clean end, syscall.ECONNRESET for a reset).
type ReadEnd struct {
	N   int64
	Err error
}

// Sink returns a Backend handler that reads a connection until it ends, sending nothing,
// and then reports on ends how that was. ends should have room for every connection.
func Sink(ends chan<- ReadEnd) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		n, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		ends <- ReadEnd{n, err}
	}
}

// WantReset checks, within d, that the client end c and the Sink connection that reports
// on ends were both reset: c's next read and the Sink's reading end with ECONNRESET, not a
// clean end, and the Sink read at most max bytes.
func WantReset(t testing.TB, c net.Conn, ends <-chan ReadEnd, max int64, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client: read %d, %v; want a reset", n, err)
	}
	select {
	case end := <-ends:
		if !errors.Is(end.Err, syscall.ECONNRESET) || end.N > max {
			t.Errorf("backend: read %d bytes, then %v; want at most %d, then a reset", end.N, end.Err, max)
		}
	case <-time.After(d):
		t.Fatalf("the backend's connection did not end within %v", d)
	}
}

// ClosedPort returns a port on host (an IP literal) that refuses connections until the test
// ends: a socket bound to it that never listens (and sets no SO_REUSEADDR) holds the port,
// so no other listener (another test's, picking port 0) can take it meanwhile, as it could
// from a listener closed at once.
func ClosedPort(t testing.TB, host string) int {
	t.Helper()
	ip, err := netip.ParseAddr(host)
	if err != nil {
		t.Fatalf("ClosedPort: %v", err)
	}
	fd, err := sock.Socket(ip)
	if err != nil {
		t.Fatalf("ClosedPort: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := sock.Bind(fd, netip.AddrPortFrom(ip, 0)); err != nil {
		t.Fatalf("ClosedPort: bind %s: %v", host, err)
	}
	a, err := sock.LocalAddr(fd)
	if err != nil {
		t.Fatalf("ClosedPort: %v", err)
	}
	return int(a.Port())
}
