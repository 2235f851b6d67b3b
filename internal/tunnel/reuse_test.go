package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/relay"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tlslink"
)

// startTLSTunnel runs a relay and an agent with TLS links on host, towards svc, with
// --pool pool and trimming off (so that the links a test uses stay those it counts).
func startTLSTunnel(t *testing.T, host string, svc *service, pool int) *tunnel {
	t.Helper()
	return startTLSTunnelTrim(t, host, svc, pool, time.Hour)
}

// startTLSTunnelTrim is startTLSTunnel with links beyond the pool trimmed after trim.
func startTLSTunnelTrim(t *testing.T, host string, svc *service, pool int, trim time.Duration) *tunnel {
	t.Helper()
	srv := newTLSServer(t)
	tn := &tunnel{}
	startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout, TLS: srv}, tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: pool, TLS: pinned(t, srv.Pin), idleTrim: trim}, tn)
	tn.waitPools(t, pool, pool)
	return tn
}

// TestTLSLinkServesManyClients sends 50 clients in a row, each with its own random
// payload checked by SHA-256, through a tunnel with TLS links and --pool 1, on both
// loopbacks. The first client's take opens one replacement link (the pool was empty);
// from then on the two links come back after every session: two TLS handshakes in all,
// on each side, where one link per client made 51.
func TestTLSLinkServesManyClients(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			tn := startTLSTunnel(t, host, svc, 1)
			for i := range 50 {
				size := 1 + i*2731%(96<<10) // from a byte to 96 KiB: single frames and many
				if _, err := roundTrip(dial(t, tn.clients), size, 0); err != nil {
					t.Fatalf("client %d (%d bytes): %v", i+1, size, err)
				}
				tn.relayLog.waitCount(`close #\d+ `, i+1)
				tn.agentLog.waitCount(`close #\d+ `, i+1)
				// Both links back on both sides before the next client, so that it finds one.
				tn.waitPools(t, 2, 2)
			}
			for _, s := range []*logSink{tn.relayLog, tn.agentLog} {
				if n := s.count(`link #\d+ up`); n != 2 {
					t.Errorf("%s: %d links up (TLS handshakes) for 50 clients, want 2", s.name, n)
				}
				if n := s.count(`link #\d+ down`); n != 0 {
					t.Errorf("%s: %d links down, want none", s.name, n)
				}
			}
		})
	}
}

// modeService is a backend whose behaviour each client picks with its first line (see
// serveMode); what it saw is reported on events.
type modeService struct {
	ln     *net.TCPListener
	events chan string
}

func (s *modeService) ep(t testing.TB) endpoint.Endpoint { return epOf(t, s.ln.Addr()) }

func startModeService(t *testing.T, host string) *modeService {
	t.Helper()
	s := &modeService{ln: listen(t, host), events: make(chan string, 16)}
	serveEach(t, s.ln, s.serveMode)
	return s
}

// serveMode reads the client's mode line and does what it says:
//
//	echo        echo the rest, then half-close
//	sum         read to the end, answer the SHA-256 of it, half-close
//	fin N       send N bytes of pattern, half-close, then read to the end: event "read <sha>"
//	hold        send "ready\n", read until an error: event "error <errno>" (or "eof")
//	reset K     read K bytes, then reset
//	stream      send "ready\n", then write until an error: event "error <errno>"
func (s *modeService) serveMode(c *net.TCPConn) {
	mode, err := readLineConn(c)
	if err != nil {
		return
	}
	var n int
	switch {
	case mode == "echo\n":
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	case mode == "sum\n":
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			fmt.Fprintf(c, "%x\n", h.Sum(nil))
			_ = c.CloseWrite()
		}
	case scan(mode, "fin %d\n", &n):
		if _, err := c.Write(pattern(n)); err != nil {
			return
		}
		_ = c.CloseWrite()
		h := sha256.New()
		_, err := io.Copy(h, c)
		s.events <- fmt.Sprintf("read %x %v", h.Sum(nil), err)
	case mode == "hold\n":
		_, _ = io.WriteString(c, "ready\n")
		_, err := io.Copy(io.Discard, c)
		s.events <- errName(err)
	case scan(mode, "reset %d\n", &n):
		_, _ = io.ReadFull(c, make([]byte, n))
		_ = c.SetLinger(0)
	case mode == "stream\n":
		_, _ = io.WriteString(c, "ready\n")
		chunk := pattern(64 << 10)
		for range 1024 { // at most 64 MiB
			if _, err = c.Write(chunk); err != nil {
				break
			}
		}
		s.events <- errName(err)
	}
}

func scan(s, format string, n *int) bool {
	_, err := fmt.Sscanf(s, format, n)
	return err == nil
}

// pattern is n bytes that are the same for the service and the test.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// errName names how a read or write ended: "eof", "reset" (ECONNRESET or EPIPE) or the error.
func errName(err error) string {
	switch {
	case err == nil:
		return "eof"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	}
	return err.Error()
}

// echoCheck sends "echo" and size random bytes as one client, half-closes and checks the
// echo by length and SHA-256.
func echoCheck(t *testing.T, tn *tunnel, size int) {
	t.Helper()
	c := dial(t, tn.clients)
	if _, err := io.WriteString(c, "echo\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(c, size, 0); err != nil {
		t.Fatalf("the next client: %v", err)
	}
}

func waitEvent(t *testing.T, s *modeService) string {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-time.After(testTimeout):
		t.Fatal("no event from the service")
		return ""
	}
}

// TestTLSReuseCloses runs, on links that have served clients before, half-closes either
// way round and resets from either side in the middle of a transfer both ways, and checks
// after each that the next client gets exactly its own bytes: what was in flight when a
// session was cut is never carried into the next one. Over IPv4 and IPv6.
func TestTLSReuseCloses(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startModeService(t, host)
			srv := newTLSServer(t)
			tn := &tunnel{}
			startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout, TLS: srv}, tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, TLS: pinned(t, srv.Pin), idleTrim: time.Hour}, tn)
			tn.waitPools(t, 1, 1)
			// Two links: a replacement opens only while fewer than --pool links are idle,
			// so the first link is held by a client until the replacement is up (a client
			// that ended first could bring its link back before the slot counted, and the
			// pool stayed at one link: 3 in about 40 runs).
			c := dial(t, tn.clients)
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			_, _ = io.WriteString(c, "hold\n")
			if l, err := readLineConn(c); err != nil || l != "ready\n" {
				t.Fatalf("%q, %v", l, err)
			}
			tn.waitPools(t, 1, 1) // the replacement: the first link is busy
			_ = c.CloseWrite()
			if e := waitEvent(t, svc); e != "eof" {
				t.Fatalf("the service saw %q, want the client's end", e)
			}
			tn.waitPools(t, 2, 2) // and the first link back

			// After each case, the next clients get exactly their own bytes, on whichever
			// link they find (both links, in turn).
			next := func() {
				for i := range 2 {
					echoCheck(t, tn, 64<<10+i)
				}
			}
			t.Run("client half-closes first", func(t *testing.T) {
				c := dial(t, tn.clients)
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				data := make([]byte, 300<<10)
				_, _ = rand.Read(data)
				_, _ = io.WriteString(c, "sum\n")
				if _, err := c.Write(data); err != nil {
					t.Fatal(err)
				}
				_ = c.CloseWrite() // the service reads to the end: the FIN came through
				answer, err := io.ReadAll(c)
				if want := fmt.Sprintf("%x\n", sha256.Sum256(data)); err != nil || string(answer) != want {
					t.Fatalf("answer %q, %v; want %q", answer, err, want)
				}
				next()
			})
			t.Run("service half-closes first", func(t *testing.T) {
				c := dial(t, tn.clients)
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				_, _ = io.WriteString(c, "fin 200000\n")
				got, err := io.ReadAll(c) // to the service's FIN
				if err != nil || !bytes.Equal(got, pattern(200000)) {
					t.Fatalf("read %d bytes (%v) before the service's end, want its 200000", len(got), err)
				}
				data := make([]byte, 500<<10)
				_, _ = rand.Read(data)
				if _, err := c.Write(data); err != nil { // the other direction still flows
					t.Fatal(err)
				}
				_ = c.CloseWrite()
				if e, want := waitEvent(t, svc), fmt.Sprintf("read %x <nil>", sha256.Sum256(data)); e != want {
					t.Fatalf("the service: %q, want %q", e, want)
				}
				next()
			})
			// The client resets once the session is under way: in the middle of an upload
			// (hold) or of a download (stream).
			for _, tc := range []struct {
				mode string
				busy func(c *net.TCPConn) error
			}{
				{"hold", func(c *net.TCPConn) error { _, err := c.Write(make([]byte, 100<<10)); return err }},
				{"stream", func(c *net.TCPConn) error { _, err := io.ReadFull(c, make([]byte, 1<<20)); return err }},
			} {
				t.Run("client resets in "+tc.mode, func(t *testing.T) {
					c := dial(t, tn.clients)
					_ = c.SetDeadline(time.Now().Add(testTimeout))
					_, _ = io.WriteString(c, tc.mode+"\n")
					if l, err := readLineConn(c); err != nil || l != "ready\n" {
						t.Fatalf("%q, %v", l, err)
					}
					if err := tc.busy(c); err != nil {
						t.Fatal(err)
					}
					_ = c.SetLinger(0)
					c.Close()
					if e := waitEvent(t, svc); e != "reset" {
						t.Fatalf("the service saw %q, want the client's reset", e)
					}
					next()
				})
			}
			t.Run("service resets during an upload", func(t *testing.T) {
				c := dial(t, tn.clients)
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				_, _ = io.WriteString(c, "reset 1000\n")
				go func() { _, _ = c.Write(make([]byte, 8<<20)) }()
				_, err := io.Copy(io.Discard, c)
				// The writer may be the one told of the reset (Linux tells one call), and
				// the read then ends as if at a FIN: the socket's state says which it was.
				if e := errName(err); e != "reset" && !relay.ConnReset(c) {
					t.Fatalf("the client saw %q, want the service's reset", e)
				}
				next()
			})
			t.Logf("relay: %d links up, %d down", tn.relayLog.count(`link #\d+ up`), tn.relayLog.count(`link #\d+ down`))
		})
	}
}

// TestTLSLinkModeMismatch: an agent that carries one client per TLS link (no link=frames)
// is refused by the relay, and a relay that does so by the agent, each with a line that
// says so on both sides; no client is ever paired with such a link.
func TestTLSLinkModeMismatch(t *testing.T) {
	srv := newTLSServer(t)
	t.Run("agent", func(t *testing.T) {
		var tn tunnel
		startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: 200 * time.Millisecond, TLS: srv}, &tn)
		c := dial(t, tn.links)
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		tc := tls.Client(c, pinned(t, srv.Pin).Config())
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		binding, err := tlslink.Exporter(tc.ConnectionState())
		if err != nil {
			t.Fatal(err)
		}
		_, err = clientHandshake(tc, linkParams{hello: true, rand: rand.Reader, timeout: testTimeout, binding: binding})
		if err == nil || !strings.Contains(err.Error(), "link mode mismatch: listentwo carries one client after another on each TLS link (link=frames), connecttwo carries one client per TLS link (no link=frames)") {
			t.Fatalf("handshake: %v", err)
		}
		tn.relayLog.wait(`link #1 refused 127\.0\.0\.1:\d+: link mode mismatch`)
		if n := tn.relay.IdleLinks(); n != 0 {
			t.Errorf("%d idle links, want none", n)
		}
		dialExpectClosed(t, tn.clients) // no link: closed after --wait
		tn.relayLog.wait(`failed #1 .*no idle link`)
	})
	t.Run("relay", func(t *testing.T) {
		ln := listen(t, "127.0.0.1")
		errs := make(chan error, 1)
		go func() {
			c, err := ln.AcceptTCP()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			tc := tls.Server(c, srv.Config())
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			if err := tc.Handshake(); err != nil {
				errs <- err
				return
			}
			binding, _ := tlslink.Exporter(tc.ConnectionState())
			errs <- serverHandshake(tc, linkParams{hello: true, rand: rand.Reader, timeout: testTimeout, binding: binding}, admitAll)
		}()
		var tn tunnel
		startAgent(t, AgentConfig{Relay: epOf(t, ln.Addr()), Service: deadPort(t), Hello: true, Pool: 1, TLS: pinned(t, srv.Pin)}, &tn)
		select {
		case err := <-errs:
			if err == nil || !strings.Contains(err.Error(), "link mode mismatch: connecttwo carries one client after another on each TLS link (link=frames), listentwo carries one client per TLS link") {
				t.Fatalf("the relay's side: %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("no handshake")
		}
		tn.agentLog.wait(`link #1 to .* failed: link mode mismatch: listentwo carries one client per TLS link \(no link=frames\), connecttwo carries one client after another`)
		if n := tn.agentLog.count(`link #\d+ up`); n != 0 {
			t.Errorf("%d links up, want none", n)
		}
	})
}

// fakeAgent is a TLS link of the test's own that passes the handshake with link=frames and
// then speaks frames as the test says.
type fakeAgent struct {
	tc *tls.Conn
	fr frameReader
}

func dialFakeAgent(t *testing.T, tn *tunnel, pin string) *fakeAgent {
	t.Helper()
	c := dial(t, tn.links)
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	tc := tls.Client(c, pinned(t, pin).Config())
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	binding, err := tlslink.Exporter(tc.ConnectionState())
	if err != nil {
		t.Fatal(err)
	}
	rest, err := clientHandshake(tc, linkParams{hello: true, rand: rand.Reader, timeout: testTimeout, binding: binding, frames: true})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeAgent{tc: tc, fr: frameReader{r: tc, pre: rest}}
}

// hello reads a session's hello.
func (f *fakeAgent) hello(t *testing.T) string {
	t.Helper()
	f.fr.next()
	var line []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(line, []byte("\r\n")) {
		if _, err := f.fr.Read(b); err != nil {
			t.Fatalf("reading the hello: %v", err)
		}
		line = append(line, b[0])
	}
	return string(line)
}

// TestTLSFrameProtocolError: a link whose peer breaks the frame protocol (an unknown type,
// an oversize DATA frame, DATA after its FIN) is closed, its client reset or ended, and it
// is never paired again.
func TestTLSFrameProtocolError(t *testing.T) {
	for _, tc := range []struct {
		name, frames, why string
	}{
		{"unknown type", "\x09\x00\x00", `link protocol error: unknown frame type 9`},
		{"oversize", "\x01\x40\x00", `link protocol error: DATA frame of 16384 bytes`},
		{"data after fin", "\x02\x00\x00\x01\x00\x03bad", `link protocol error: data between sessions`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTLSServer(t)
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: 300 * time.Millisecond, TLS: srv}, &tn)
			fa := dialFakeAgent(t, &tn, srv.Pin)
			if err := tn.relay.WaitIdle(ctxT(t), 1); err != nil {
				t.Fatal(err)
			}
			c := dial(t, tn.clients)
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			if h := fa.hello(t); !strings.HasPrefix(h, "PROXY TCP4 ") {
				t.Fatalf("hello %q", h)
			}
			if _, err := fa.tc.Write([]byte(tc.frames)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if len(got) != 0 {
				t.Errorf("the client got %q", got)
			}
			if tc.name == "data after fin" {
				// The FIN came first: the client sees an end, and once it ends too, the
				// relay finds the bytes that followed the FIN.
				if err != nil {
					t.Fatalf("the client: %v, want the FIN passed on", err)
				}
				_ = c.CloseWrite()
			} else if errName(err) != "reset" {
				t.Fatalf("the client: %v, want a reset", err)
			}
			tn.relayLog.wait(`link #1 down 127\.0\.0\.1:\d+: ` + tc.why)
			if n := tn.relay.IdleLinks(); n != 0 {
				t.Errorf("%d idle links, want none", n)
			}
			// The next client finds no link, never the bad one.
			dialExpectClosed(t, tn.clients)
			tn.relayLog.wait(`failed #2 .*no idle link`)
		})
	}
}

// TestTLSLinkBackAfterSecretChange: a TLS link that was busy when listentwo's secret
// changed proved the old secret, so when its session ends it is closed, as the idle links
// were at the reload, rather than put back in the pool.
func TestTLSLinkBackAfterSecretChange(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("old secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, "127.0.0.1", echoMode)
	srv := newTLSServer(t)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, Secret: []byte("old secret"), SecretFile: file}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, TLS: pinned(t, srv.Pin), Secret: []byte("old secret"), idleTrim: time.Hour}, &tn)
	tn.waitPools(t, 1, 1)
	c := dial(t, tn.clients)
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if l, err := readLineConn(c); err != nil || l != "ping\n" {
		t.Fatalf("echo %q, %v", l, err)
	}
	m := regexp.MustCompile(`open #1 \S+ -> link #(\d+) `).FindStringSubmatch(tn.relayLog.String())
	if m == nil {
		t.Fatal("no open line")
	}
	if err := os.WriteFile(file, []byte("new secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tn.relay.Reload()
	_ = c.CloseWrite()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	tn.relayLog.wait(`link #` + m[1] + ` down 127\.0\.0\.1:\d+: the secret changed`)
}

// TestLinkLinesByMode: a plain link's greeting and reply are the four and five fields they
// always were, byte for byte; only a TLS link's carry link=frames, before the mac.
func TestLinkLinesByMode(t *testing.T) {
	nonce := [nonceLen]byte{1, 2, 3}
	hexNonce := "010203" + strings.Repeat("00", nonceLen-3)
	plain := offer{hello: true, auth: true, nonce: nonce}
	if got, want := plain.text(), "SHD-LINK/2 hello=proxy auth=hmac-sha256 nonce="+hexNonce; got != want {
		t.Errorf("plain: %q, want %q", got, want)
	}
	framed := offer{nonce: nonce, frames: true}
	if got, want := framed.text(), "SHD-LINK/2 hello=none auth=none nonce="+hexNonce+" link=frames"; got != want {
		t.Errorf("TLS: %q, want %q", got, want)
	}
	for _, o := range []offer{plain, framed} {
		g, err := parseGreeting([]byte(o.text() + "\n"))
		if err != nil || g != o {
			t.Errorf("greeting %q parsed as %+v, %v", o.text(), g, err)
		}
		r, _, body, err := parseReply([]byte(o.text() + " mac=-\n"))
		if err != nil || r != o || string(body) != o.text() {
			t.Errorf("reply of %q parsed as %+v, %q, %v", o.text(), r, body, err)
		}
	}
	if _, err := parseGreeting([]byte(framed.text() + " link=frames\n")); err == nil {
		t.Error("a greeting with the field twice was accepted")
	}
}

// TestTLSExtraLinksTrimmed: a burst of clients beyond --pool opens more TLS links; when
// they come back and the load is gone, the links beyond --pool are closed after the trim
// delay, on both sides, and the pool serves on.
func TestTLSExtraLinksTrimmed(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	tn := startTLSTunnelTrim(t, "127.0.0.1", svc, 2, 200*time.Millisecond)
	errs := make(chan error, 6)
	for range 6 {
		go func() {
			c, err := net.DialTCP("tcp", nil, tn.clients.Addr().(*net.TCPAddr))
			if err == nil {
				defer c.Close()
				_, err = roundTrip(c, 256<<10, 0)
			}
			errs <- err
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	up := tn.agentLog.count(`link #\d+ up`)
	if up <= 2 {
		t.Fatalf("%d links up for a burst of 6 clients on --pool 2: the burst opened none", up)
	}
	tn.waitPools(t, 2, 2)
	tn.agentLog.waitCount(`link #\d+ down .*: not needed: more idle links than the pool size`, up-2)
	tn.relayLog.waitCount(`link #\d+ down .*: closed by connecttwo`, up-2)
	echoCheckPlain(t, tn)
}

// echoCheckPlain checks one more client through an echo service.
func echoCheckPlain(t *testing.T, tn *tunnel) {
	t.Helper()
	if _, err := roundTrip(dial(t, tn.clients), 10000, 0); err != nil {
		t.Fatal(err)
	}
}

// idleLinkMemory is what this process holds with idle TLS links, both ends in it, as a
// process's trimmer leaves it (three collections: relay.Trimmer's two and
// debug.FreeOSMemory's): the heap in use, the stack of each goroutine that waits on an
// idle link (connecttwo's for its next session, listentwo's watch), and the stacks of all
// of connecttwo's goroutines, in bytes.
type idleLinkMemory struct {
	heap              uint64
	waiters, watchers []uint64
	agent             uint64
}

func measureIdleLinks(t *testing.T) idleLinkMemory {
	t.Helper()
	for range 3 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	im := idleLinkMemory{heap: m.HeapInuse}
	for _, g := range testkit.Goroutines(t) {
		if g.Calls("tunnel.(*Agent)") {
			im.agent += g.Stack
		}
		switch {
		case g.Calls("tunnel.(*Agent).waitSession"):
			im.waiters = append(im.waiters, g.Stack)
		case g.Calls("tunnel.watchIdle"):
			im.watchers = append(im.watchers, g.Stack)
		}
	}
	return im
}

// perLink is the mean of stacks, in KiB.
func perLink(stacks []uint64) float64 {
	var sum uint64
	for _, s := range stacks {
		sum += s
	}
	return float64(sum) / 1024 / float64(max(len(stacks), 1))
}

// usedLinkMemory runs n idle TLS links (both ends in this process), then has each of them
// and one replacement carry a session of 256 KiB each way, one after another, and returns
// what the process holds with the n fresh links idle and with the n+1 used ones idle.
func usedLinkMemory(t *testing.T, n int) (fresh, used idleLinkMemory) {
	t.Helper()
	svc := startService(t, "127.0.0.1", echoMode)
	srv := newTLSServer(t)
	tn := &tunnel{}
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, MaxLinks: 4 * n}, tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: n, TLS: pinned(t, srv.Pin), idleTrim: time.Hour}, tn)
	tn.waitPools(t, n, n)
	fresh = measureIdleLinks(t)
	// One after another, so that every link (the pool and the one replacement) carries one.
	for range n + 1 {
		if _, err := roundTrip(dial(t, tn.clients), 256<<10, 0); err != nil {
			t.Fatal(err)
		}
		tn.waitPools(t, n+1, n+1)
	}
	used = measureIdleLinks(t)
	if len(fresh.waiters) != n || len(used.waiters) != n+1 || len(fresh.watchers) != n || len(used.watchers) != n+1 {
		t.Fatalf("goroutines waiting on idle links: connecttwo %d fresh, %d used; listentwo %d, %d; want %d, %d",
			len(fresh.waiters), len(used.waiters), len(fresh.watchers), len(used.watchers), n, n+1)
	}
	t.Logf("heap with %d fresh idle TLS links (both ends): %d KiB; with %d that carried a session: %d KiB",
		n, fresh.heap>>10, n+1, used.heap>>10)
	return fresh, used
}

// TestTLSUsedIdleLinkMemory: a TLS link that has carried a bulk session and waits idle
// again holds little more than a fresh one. crypto/tls keeps the buffer it reads records
// into for the connection's life; fed more than one record at a time from the Wire's
// read-ahead it grew to 48 KiB on each end (78.6 KiB more per link on both ends than a
// fresh link), where one record at a time keeps it at about 17 KiB (recordConn).
func TestTLSUsedIdleLinkMemory(t *testing.T) {
	const n = 40
	fresh, used := usedLinkMemory(t, n)
	extra := (float64(used.heap) - float64(fresh.heap)) / 1024 / (n + 1)
	t.Logf("%.1f KiB more heap per link", extra)
	if extra > 56 {
		t.Errorf("an idle TLS link that carried a session holds %.1f KiB more (both ends) than a fresh one, want at most 56", extra)
	}
}

// TestTLSUsedIdleLinkStack: the goroutine that waits on an idle TLS link, fresh or back
// from a session, holds the stack of that wait and no more. A goroutine keeps the stack it
// grew to while it waits, and a collection halves it only while it uses less than a
// quarter: connecttwo waited for a used link's next session on the goroutine that had
// relayed its last one (the bulk copy, crypto/tls), and for a fresh link's first on the
// slot's goroutine, which had run the TLS handshake; each held twice the stack of a new
// goroutine's wait (16 against 8 KiB a link under -race, 8 against 4 without). The stacks
// are each goroutine's own (testkit.Goroutines), in a child process with the runtime's
// adaptive starting size off, so that a new goroutine's stack is what its own calls grew
// it to, not the average the last collection saw.
func TestTLSUsedIdleLinkStack(t *testing.T) {
	if !testkit.InChild(t, "GODEBUG=adaptivestackstart=0") {
		return
	}
	fresh, used := usedLinkMemory(t, 40)
	fw, uw := perLink(fresh.waiters), perLink(used.waiters)
	fa, ua := float64(fresh.agent)/1024/40, float64(used.agent)/1024/41
	t.Logf("stack per idle link: connecttwo's wait %.1f KiB fresh, %.1f used; all of connecttwo's goroutines %.1f fresh, %.1f used; listentwo's watch %.1f fresh, %.1f used",
		fw, uw, fa, ua, perLink(fresh.watchers), perLink(used.watchers))
	// A new goroutine's wait, the same for a fresh link and a used one, and half what
	// either defect holds.
	if uw > fw+1 {
		t.Errorf("connecttwo's wait on an idle TLS link that carried a session holds %.1f KiB of stack, on a fresh link %.1f: want at most 1 KiB more", uw, fw)
	}
	if fw > uw+1 {
		t.Errorf("connecttwo's wait on a fresh idle TLS link holds %.1f KiB of stack, on one that carried a session %.1f: want at most 1 KiB more", fw, uw)
	}
	// A goroutine per idle link: the slots whose links were taken waited, one goroutine
	// each, for a place to open a link in, beside the links that came back.
	if ua > fa+1 {
		t.Errorf("connecttwo's goroutines hold %.1f KiB of stack per idle TLS link once the links carried a session, %.1f when fresh: want at most 1 KiB more", ua, fa)
	}
}

// TestTLSLinkOpeningsTrimmed: once TLS links have been opened and none is opened for the
// quiet time, both ends give memory back, as after a relay: a TLS handshake leaves tens of
// KiB of garbage (key shares, the certificate and its check), which Go returned late, so
// connecttwo held 8 KiB a fresh idle link more in its RSS than after a trim, and listentwo
// 4, until the first client. No client comes here.
func TestTLSLinkOpeningsTrimmed(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	tn := startTLSTunnel(t, "127.0.0.1", svc, 4)
	testkit.WaitUntil(t, testTimeout, "a trim on both ends after the links' handshakes", func() bool {
		return tn.relay.trim.Trims() >= 1 && tn.agent.trim.Trims() >= 1
	})
}
