package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logSink collects a tool's log lines (a testkit.LogBuf) and lets a test wait for them
// with testTimeout. Safe for simultaneous use.
type logSink struct {
	*testkit.LogBuf
	t    testing.TB
	name string
}

func newSink(t testing.TB, name string) *logSink {
	return &logSink{LogBuf: testkit.NewLogBuf(), t: t, name: name}
}

func (s *logSink) logger() *connlog.Logger { return connlog.New(s) }

// count returns how many lines match re.
func (s *logSink) count(re string) int { return s.Count(re) }

// waitCount waits until at least n lines match re, failing the test after testTimeout.
func (s *logSink) waitCount(re string, n int) {
	s.t.Helper()
	s.WaitFor(s.t, re, n, testTimeout)
}

func (s *logSink) wait(re string) { s.t.Helper(); s.waitCount(re, 1) }

// listen opens a TCP listener on host:0 (127.0.0.1 or ::1), closed at the end of the test.
func listen(t testing.TB, host string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", host, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func epOf(t testing.TB, a net.Addr) endpoint.Endpoint {
	t.Helper()
	ta := a.(*net.TCPAddr)
	return endpoint.Endpoint{Host: ta.IP.String(), Port: ta.Port}
}

// service is a test backend on loopback. Its mode picks what it does with a connection.
type service struct {
	ln       *net.TCPListener
	accepted atomic.Int64
	mu       sync.Mutex
	sources  []string // with proxyMode: the client address each PROXY header named
	headers  []string // with proxyMode: each raw header
}

type serviceMode int

const (
	echoMode   serviceMode = iota // echo everything, then half-close
	bannerMode                    // write bannerText first, then echo
	proxyMode                     // read a PROXY v1 header, record it, write "SRC <addr>\n", then echo
)

const bannerText = "SSH-2.0-tunneltest\r\n"

func startService(t testing.TB, host string, mode serviceMode) *service {
	t.Helper()
	s := &service{ln: listen(t, host)}
	serveEach(t, s.ln, func(c *net.TCPConn) {
		s.accepted.Add(1)
		var src io.Reader = c
		switch mode {
		case bannerMode:
			if _, err := io.WriteString(c, bannerText); err != nil {
				return
			}
		case proxyMode:
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			h, err := parseHello([]byte(line))
			if err != nil {
				fmt.Fprintf(c, "BAD %v\n", err)
				return
			}
			s.mu.Lock()
			s.sources = append(s.sources, h.SourceAddr.String())
			s.headers = append(s.headers, line)
			s.mu.Unlock()
			fmt.Fprintf(c, "SRC %s\n", h.SourceAddr)
			src = br
		}
		if _, err := io.Copy(c, src); err != nil {
			return
		}
		_ = c.CloseWrite()
	})
	return s
}

// serveEach accepts on ln until it is closed and runs handle on each connection, on a
// goroutine of its own, with testTimeout as its deadline; the connection is closed when
// handle returns. The test's end closes ln and waits for them all.
func serveEach(t testing.TB, ln *net.TCPListener, handle func(c *net.TCPConn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				handle(c)
			}()
		}
	}()
}

func (s *service) ep(t testing.TB) endpoint.Endpoint { return epOf(t, s.ln.Addr()) }

// tunnel is a Relay and an Agent running in-process on loopback.
type tunnel struct {
	relay     *Relay
	agent     *Agent
	clients   *net.TCPListener
	links     *net.TCPListener
	relayLog  *logSink
	agentLog  *logSink
	stopRelay context.CancelFunc
	stopAgent context.CancelFunc
	relayDone chan struct{} // closed when Serve returns, after relayErr is set
	agentDone chan struct{} // closed when Run returns, after agentErr is set
	relayErr  error
	agentErr  error
}

// waitDone waits for done to be closed, failing the test after testTimeout.
func waitDone(t testing.TB, what string, done chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatalf("%s did not return within %v", what, testTimeout)
	}
}

// startRelay runs a Relay on fresh listeners on host until the test ends.
func startRelay(t testing.TB, host string, cfg RelayConfig, tn *tunnel) {
	t.Helper()
	serveRelay(t, cfg, tn, listen(t, host), listen(t, host))
}

// serveRelay runs a Relay with cfg on the listeners clients and links until the test ends
// (or tn.stopRelay), as tn's relay.
func serveRelay(t testing.TB, cfg RelayConfig, tn *tunnel, clients, links *net.TCPListener) {
	t.Helper()
	tn.clients, tn.links = clients, links
	cfg.Clients, cfg.Links = epOf(t, clients.Addr()), epOf(t, links.Addr())
	if tn.relayLog == nil {
		tn.relayLog = newSink(t, "listentwo")
	}
	cfg.Log = tn.relayLog.logger()
	r, err := NewRelay(cfg)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	tn.relay = r
	ctx, cancel := context.WithCancel(context.Background())
	tn.stopRelay = cancel
	done := make(chan struct{})
	tn.relayDone = done
	var serveErr error // this relay's; tn.relayErr is the latest relay's
	go func() {
		serveErr = r.Serve(ctx, clients, links)
		tn.relayErr = serveErr
		cfg.Log.Drain()
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		waitDone(t, "Relay.Serve", done)
		if serveErr != nil {
			t.Errorf("Relay.Serve: %v", serveErr)
		}
	})
}

// startAgent runs an Agent towards tn's relay until the test ends.
func startAgent(t testing.TB, cfg AgentConfig, tn *tunnel) {
	t.Helper()
	if cfg.Relay.Port == 0 {
		cfg.Relay = epOf(t, tn.links.Addr())
	}
	if tn.agentLog == nil {
		tn.agentLog = newSink(t, "connecttwo")
	}
	cfg.Log = tn.agentLog.logger()
	if cfg.idleTrim == 0 {
		// A TLS link back from its session makes one idle link more than the pool until
		// it is trimmed: soon, so that tests that wait for the pool's size do not wait long.
		cfg.idleTrim = 300 * time.Millisecond
	}
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatalf("NewAgent: %v", err)
	}
	tn.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	tn.stopAgent = cancel
	done := make(chan struct{})
	tn.agentDone = done
	go func() { tn.agentErr = a.Run(ctx); cfg.Log.Drain(); close(done) }()
	t.Cleanup(func() {
		cancel()
		waitDone(t, "Agent.Run", done)
		if tn.agentErr != nil {
			t.Errorf("Agent.Run: %v", tn.agentErr)
		}
	})
}

// waitPools waits until the agent has n idle links and the relay has m.
func (tn *tunnel) waitPools(t testing.TB, agentIdle, relayIdle int) {
	t.Helper()
	ctx := ctxT(t)
	if tn.agent != nil {
		if err := tn.agent.WaitIdle(ctx, agentIdle); err != nil {
			t.Fatalf("agent never had %d idle links (has %d):\nagent:\n%s\nrelay:\n%s", agentIdle, tn.agent.IdleLinks(), tn.agentLog, tn.relayLog)
		}
	}
	if err := tn.relay.WaitIdle(ctx, relayIdle); err != nil {
		t.Fatalf("relay never had %d idle links (has %d):\nrelay:\n%s", relayIdle, tn.relay.IdleLinks(), tn.relayLog)
	}
}

func dial(t testing.TB, ln net.Listener) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends n random bytes on c, half-closes, reads until EOF, and checks that the
// bytes that came back (after skip bytes of preamble, returned) have the sent length and
// SHA-256.
func roundTrip(c *net.TCPConn, n int, preamble int) (pre []byte, err error) {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	data := make([]byte, n)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	pre = make([]byte, preamble)
	if _, err := io.ReadFull(c, pre); err != nil {
		return nil, fmt.Errorf("reading %d preamble bytes: %w", preamble, err)
	}
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return pre, fmt.Errorf("reading echo after %d bytes: %w", got, err)
	}
	if err := <-werr; err != nil {
		return pre, fmt.Errorf("writing: %w", err)
	}
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return pre, fmt.Errorf("echo: got %d bytes sha %x, want %d bytes sha %x", got, h.Sum(nil)[:8], n, want[:8])
	}
	return pre, nil
}

// readLineConn reads one LF-terminated line byte by byte (so nothing after it is consumed).
func readLineConn(c net.Conn) (string, error) {
	var sb strings.Builder
	var b [1]byte
	for sb.Len() < 512 {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return sb.String(), err
		}
		sb.WriteByte(b[0])
		if b[0] == '\n' {
			return sb.String(), nil
		}
	}
	return sb.String(), errors.New("line too long")
}

// expectClosed checks that c is ended by the peer (EOF or reset) without any data, within
// testTimeout, and returns how long that took.
// dialExpectClosed connects to ln and returns how long the server took to close the
// connection. A server that resets the connection at once can do so before connect
// returns; that counts as closed at once.
func dialExpectClosed(t testing.TB, ln net.Listener) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), testTimeout)
	if errors.Is(err, syscall.ECONNRESET) {
		return time.Since(start)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	defer c.Close()
	return expectClosed(t, c)
}

func expectClosed(t testing.TB, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	var b [64]byte
	n, err := c.Read(b[:])
	if n > 0 {
		t.Fatalf("expected the connection closed, read %q", b[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed within %v", testTimeout)
	}
	return time.Since(start)
}
