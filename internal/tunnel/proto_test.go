package tunnel

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T, host string) (server, client *net.TCPConn) {
	t.Helper()
	ln := listen(t, host)
	client = dial(t, ln)
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, client
}

func params(hello bool, secret string) linkParams {
	p := linkParams{hello: hello, rand: rand.Reader, timeout: 2 * time.Second}
	if secret != "" {
		p.secret = []byte(secret)
	}
	return p
}

func TestHandshake(t *testing.T) {
	tests := []struct {
		name             string
		server, client   linkParams
		serverErr, clErr string // "" means success
	}{
		{name: "plain", server: params(false, ""), client: params(false, "")},
		{name: "hellos", server: params(true, ""), client: params(true, "")},
		{name: "secret", server: params(true, "s3cret"), client: params(true, "s3cret")},
		{name: "wrong secret", server: params(false, "s3cret"), client: params(false, "guess"),
			serverErr: "authentication failed", clErr: "relay refused the link: authentication failed"},
		{name: "only relay has a secret", server: params(false, "s3cret"), client: params(false, ""),
			serverErr: "listentwo has --secret-file, connecttwo has none", clErr: "listentwo has --secret-file, connecttwo has none"},
		{name: "only agent has a secret", server: params(false, ""), client: params(false, "s3cret"),
			serverErr: "connecttwo has --secret-file, listentwo has none", clErr: "connecttwo has --secret-file, listentwo has none"},
		{name: "only relay uses hellos", server: params(true, ""), client: params(false, ""),
			serverErr: "hello mismatch: connecttwo does not use hellos", clErr: "hello mismatch: listentwo uses hellos (--hello-dst)"},
		{name: "only agent uses hellos", server: params(false, ""), client: params(true, ""),
			serverErr: "hello mismatch: connecttwo uses hellos (--hello-from-src)", clErr: "hello mismatch: listentwo does not use hellos"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := tcpPair(t, "127.0.0.1")
			admitted := 0
			serr := make(chan error, 1)
			go func() {
				serr <- serverHandshake(s, tc.server, serverHooks{admit: func() error { admitted++; return nil }, release: func() { admitted-- }})
			}()
			rest, cerr := clientHandshake(c, tc.client)
			sErr := <-serr
			check := func(side string, err error, want string) {
				t.Helper()
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: unexpected error %v", side, err)
				case want != "" && err == nil:
					t.Errorf("%s: handshake succeeded, want error %q", side, want)
				case want != "" && !strings.Contains(err.Error(), want):
					t.Errorf("%s: error %q, want it to say %q", side, err, want)
				}
			}
			check("listentwo", sErr, tc.serverErr)
			check("connecttwo", cerr, tc.clErr)
			if len(rest) != 0 {
				t.Errorf("bytes after the verdict: %q", rest)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.serverErr == ""]; admitted != want {
				t.Errorf("admitted %d links, want %d", admitted, want)
			}
		})
	}
}

// TestHandshakeReplay records a successful exchange and replays each side's messages to a
// fresh peer: neither a recorded reply nor a recorded verdict is accepted again.
func TestHandshakeReplay(t *testing.T) {
	secret := "s3cret"
	// Record an honest exchange, as an eavesdropper on the path would.
	s, c := tcpPair(t, "127.0.0.1")
	var fromServer, fromClient bytes.Buffer
	serr := make(chan error, 1)
	go func() {
		serr <- serverHandshake(teeConn{s, &fromServer}, params(false, secret), admitAll)
	}()
	if _, err := clientHandshake(teeConn{c, &fromClient}, params(false, secret)); err != nil {
		t.Fatalf("honest exchange: %v", err)
	}
	if err := <-serr; err != nil {
		t.Fatalf("honest exchange, relay: %v", err)
	}
	greeting, verdict, _ := strings.Cut(fromServer.String(), "\n")
	greeting += "\n"
	verdict = strings.TrimSuffix(verdict, "\n")
	open, reply, _ := strings.Cut(fromClient.String(), "\n")
	if open+"\n" != opening {
		t.Fatalf("agent opened with %q", open)
	}
	if !strings.HasPrefix(verdict, "OK mac=") || !strings.Contains(reply, " mac=") {
		t.Fatalf("recorded exchange looks wrong: %q %q %q", greeting, reply, verdict)
	}
	wire := fromServer.String() + fromClient.String()
	if strings.Contains(wire, secret) || strings.Contains(wire, hex.EncodeToString([]byte(secret))) {
		t.Fatalf("the secret crossed the wire: %q", wire)
	}

	t.Run("replayed reply to the relay", func(t *testing.T) {
		s, c := tcpPair(t, "127.0.0.1")
		serr := make(chan error, 1)
		go func() {
			serr <- serverHandshake(s, params(false, secret), admitAll)
		}()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.WriteString(c, opening); err != nil {
			t.Fatal(err)
		}
		fresh, err := readLineConn(c)
		if err != nil {
			t.Fatal(err)
		}
		if fresh == greeting {
			t.Fatal("the relay reused a nonce")
		}
		if _, err := io.WriteString(c, reply); err != nil {
			t.Fatal(err)
		}
		v, _ := readLineConn(c)
		if !strings.HasPrefix(v, "ERR authentication failed") {
			t.Errorf("relay answered a replayed reply with %q", v)
		}
		if err := <-serr; err == nil || !strings.Contains(err.Error(), "replayed") {
			t.Errorf("relay error %v, want authentication failure", err)
		}
	})

	t.Run("replayed verdict to the agent", func(t *testing.T) {
		s, c := tcpPair(t, "127.0.0.1")
		fake := make(chan error, 1)
		go func() {
			// A fake relay without the secret replays the recorded greeting and verdict.
			_ = s.SetDeadline(time.Now().Add(testTimeout))
			if _, err := readLineConn(s); err != nil {
				fake <- err
				return
			}
			if _, err := io.WriteString(s, greeting); err != nil {
				fake <- err
				return
			}
			if _, err := readLineConn(s); err != nil {
				fake <- err
				return
			}
			_, err := io.WriteString(s, verdict+"\n")
			fake <- err
		}()
		_, err := clientHandshake(c, params(false, secret))
		if err == nil || !strings.Contains(err.Error(), "relay failed to prove the secret") {
			t.Errorf("agent accepted a replayed verdict: %v", err)
		}
		if err := <-fake; err != nil {
			t.Fatalf("fake relay: %v", err)
		}
	})
}

// admitAll lets every link that passes the handshake into the pool.
var admitAll = serverHooks{admit: func() error { return nil }, release: func() {}}

type teeConn struct {
	net.Conn
	w io.Writer
}

func (c teeConn) Write(p []byte) (int, error) {
	c.w.Write(p)
	return c.Conn.Write(p)
}

func TestHandshakeStrangers(t *testing.T) {
	tests := []struct {
		name, send string
		want       string
		atOnce     bool // send everything in one write, not the reply after the greeting
	}{
		{"garbage", "HELLO THERE\n", "not a link", false},
		{"http", "GET / HTTP/1.0\r\n\r\n", "not a link", false},
		{"old version", "SHD-LINK/1\n", "not a link", false},
		{"long line", strings.Repeat("x", 1000), "line longer than", false},
		{"silence", "", "handshake timed out", false},
		{"opening and more", opening + "more\n", "unexpected data after the opening", true},
		{"silent after the opening", opening, "reading reply: handshake timed out", false},
		{"garbage reply", opening + "HELLO THERE\n", "malformed reply", false},
		{"extra data", opening + "SHD-LINK/2 hello=none auth=none nonce=" + strings.Repeat("00", 32) + " mac=-\nmore", "unexpected data after the reply", false},
		{"mac without auth", opening + "SHD-LINK/2 hello=none auth=none nonce=" + strings.Repeat("00", 32) + " mac=" + strings.Repeat("ab", 32) + "\n", "mac without authentication", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := tcpPair(t, "127.0.0.1")
			p := params(false, "")
			p.timeout = 300 * time.Millisecond
			admitted := false
			serr := make(chan error, 1)
			go func() {
				serr <- serverHandshake(s, p, serverHooks{admit: func() error { admitted = true; return nil }, release: func() {}})
			}()
			if tc.send != "" {
				// The reply goes after the greeting, as a peer that speaks the protocol
				// would send it; anything else is sent at once.
				first, second, ok := strings.Cut(tc.send, "\n")
				if !ok || first+"\n" != opening || second == "" || tc.atOnce {
					first, second = tc.send, ""
				} else {
					first += "\n"
				}
				if _, err := io.WriteString(c, first); err != nil {
					t.Fatal(err)
				}
				if second != "" {
					_ = c.SetReadDeadline(time.Now().Add(testTimeout))
					if _, err := readLineConn(c); err != nil {
						t.Fatalf("no greeting: %v", err)
					}
					if _, err := io.WriteString(c, second); err != nil {
						t.Fatal(err)
					}
				}
			}
			err := <-serr
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if admitted {
				t.Error("a stranger was admitted to the pool")
			}
		})
	}
}

func TestReadHello(t *testing.T) {
	tests := []struct {
		name      string
		first     string // already read
		conn      string // still on the wire
		src       string
		rest      string
		wantErr   string
		wantAfter string // what must remain unread on the wire
	}{
		{name: "all in first", first: "PROXY TCP4 192.0.2.7 198.51.100.1 40000 1234\r\nhello", src: "192.0.2.7:40000", rest: "hello"},
		{name: "split", first: "PROXY TCP6 2001:db8::7 2001:db8::1 ", conn: "40000 1234\r\nclientdata", src: "[2001:db8::7]:40000", wantAfter: "clientdata"},
		{name: "nothing yet", conn: "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\nX", src: "192.0.2.7:1", wantAfter: "X"},
		{name: "not proxy", first: "SSH-2.0-OpenSSH\r\n", wantErr: "not a PROXY v1 header"},
		{name: "too long", first: "PROXY " + strings.Repeat("1", 200), wantErr: "not a PROXY v1 header"},
		{name: "unknown", first: "PROXY UNKNOWN\r\n", wantErr: "PROXY"},
		{name: "bad port", first: "PROXY TCP4 192.0.2.7 198.51.100.1 99999 1234\r\n", wantErr: "bad PROXY header"},
		{name: "closed early", conn: "PROXY TCP4 192.0", wantErr: "link closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := tcpPair(t, "127.0.0.1")
			if _, err := io.WriteString(s, tc.conn); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				s.CloseWrite()
			}
			h, _, rest, err := readHello(c, []byte(tc.first), 2*time.Second)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := h.SourceAddr.String(); got != tc.src {
				t.Errorf("source %s, want %s", got, tc.src)
			}
			if string(rest) != tc.rest {
				t.Errorf("rest %q, want %q", rest, tc.rest)
			}
			s.Close()
			after, _ := io.ReadAll(c)
			if string(after) != tc.wantAfter {
				t.Errorf("left on the wire %q, want %q", after, tc.wantAfter)
			}
		})
	}
}

func TestHelloFor(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		s, c := tcpPair(t, host)
		b, err := helloFor(s)
		if err != nil {
			t.Fatal(err)
		}
		proto := map[bool]string{true: "TCP6", false: "TCP4"}[strings.Contains(host, ":")]
		ca, sa := c.LocalAddr().(*net.TCPAddr), s.LocalAddr().(*net.TCPAddr)
		want := "PROXY " + proto + " " + ca.IP.String() + " " + sa.IP.String() + " " +
			strconv.Itoa(ca.Port) + " " + strconv.Itoa(sa.Port) + "\r\n"
		if string(b) != want {
			t.Errorf("hello %q, want %q", b, want)
		}
	}
}

// FuzzParseHello checks that parseHello never panics, accepts only what fits the protocol,
// and that what it accepts formats back to the same header (round trip).
func FuzzParseHello(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.7 198.51.100.1 40000 1234\r\n",
		"PROXY TCP6 2001:db8::7 2001:db8::1 40000 1234\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 0 65536\r\n",
		"\r\n\r\n\x00\r\nQUIT\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := parseHello(raw)
		if err != nil {
			return
		}
		if len(raw) > maxHello {
			t.Fatalf("accepted a %d-byte header", len(raw))
		}
		out, err := h.Format()
		if err != nil {
			t.Fatalf("accepted %q but cannot format it: %v", raw, err)
		}
		h2, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(out)))
		if err != nil || !h2.EqualsTo(h) {
			t.Fatalf("round trip of %q: %q, %v", raw, out, err)
		}
	})
}

// FuzzServerHandshake feeds arbitrary replies to the relay's side: it must never admit a
// link without the secret's MAC, and never panic.
func FuzzServerHandshake(f *testing.F) {
	f.Add([]byte("SHD-LINK/2 hello=none auth=hmac-sha256 nonce=" + strings.Repeat("00", 32) + " mac=" + strings.Repeat("00", 32) + "\n"))
	f.Add([]byte("SHD-LINK/2 hello=none auth=none nonce=" + strings.Repeat("00", 32) + " mac=-\n"))
	f.Add([]byte("\n"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, reply []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		p := params(false, "s3cret")
		p.timeout = 200 * time.Millisecond
		go func() {
			// The opening, then the reply once the greeting is there.
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			c.Write([]byte(opening))
			readLineConn(c)
			c.Write(reply)
			c.(*net.TCPConn).CloseWrite()
		}()
		err = serverHandshake(s, p, admitAll)
		if err == nil {
			t.Fatalf("admitted a link with reply %q", reply)
		}
		if errors.Is(err, io.EOF) {
			t.Fatalf("raw EOF error: %v", err)
		}
	})
}
