package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// pair returns two connected TCP connections on the given loopback address: the
// accepted side first.
func pair(t testing.TB, network, addr string) (accepted, dialed *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); d.Close() })
	return a.(*net.TCPConn), d.(*net.TCPConn)
}

// chain is user <-> (client ... server) <-> backend with a relay (an engine) in the middle.
type chain struct {
	user, backend *net.TCPConn
	result        <-chan Result
}

// An engine relays two connections with o and sends its result on the channel returned.
type engine struct {
	name  string
	start func(t *testing.T, client, server *net.TCPConn, o Options) <-chan Result
}

var (
	joinEngine = engine{"join", func(_ *testing.T, client, server *net.TCPConn, o Options) <-chan Result {
		res := make(chan Result, 1)
		go func() { res <- Join(context.Background(), client, server, o) }()
		return res
	}}
	pairEngine = engine{"pair", startPair}
	engines    = []engine{joinEngine, pairEngine}
)

// newChainOn is newChain with the relay in the middle run by e.
func newChainOn(t *testing.T, e engine, network, addr string, o Options) *chain {
	relayClient, user := pair(t, network, addr)
	backend, relayServer := pair(t, network, addr)
	return &chain{user: user, backend: backend, result: e.start(t, relayClient, relayServer, o)}
}

func (c *chain) wait(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-c.result:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("Join did not return")
		return Result{}
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sendAndHash writes data then half-closes; readHash reads to EOF and returns length and hash.
func sendAndHash(c *net.TCPConn, data []byte, errc chan<- error) {
	_, err := c.Write(data)
	if err == nil {
		err = c.CloseWrite()
	}
	errc <- err
}

func readAll(c *net.TCPConn) (int, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return int(n), sum, err
}

func TestJoinBothWaysChecksummed(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"ipv6", "tcp6", "[::1]:0"},
	} {
		for _, e := range engines {
			t.Run(e.name+"/"+tc.name, func(t *testing.T) {
				bothWaysChecksummed(t, newChainOn(t, e, tc.network, tc.addr, Options{HalfClose: true}))
			})
		}
	}
}

func bothWaysChecksummed(t *testing.T, c *chain) {
	upData, downData := randomBytes(t, 8<<20), randomBytes(t, 5<<20+7)
	errc := make(chan error, 2)
	go sendAndHash(c.user, upData, errc)
	go sendAndHash(c.backend, downData, errc)
	type got struct {
		n   int
		sum [32]byte
		err error
	}
	upGot, downGot := make(chan got, 1), make(chan got, 1)
	go func() { n, s, err := readAll(c.backend); upGot <- got{n, s, err} }()
	go func() { n, s, err := readAll(c.user); downGot <- got{n, s, err} }()
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	u, d := <-upGot, <-downGot
	if u.err != nil || d.err != nil {
		t.Fatal(u.err, d.err)
	}
	if u.n != len(upData) || u.sum != sha256.Sum256(upData) {
		t.Fatalf("up: got %d bytes, want %d (checksum match %v)", u.n, len(upData), u.sum == sha256.Sum256(upData))
	}
	if d.n != len(downData) || d.sum != sha256.Sum256(downData) {
		t.Fatalf("down: got %d bytes, want %d", d.n, len(downData))
	}
	r := c.wait(t)
	if r.Up != int64(len(upData)) || r.Down != int64(len(downData)) {
		t.Fatalf("counts up=%d down=%d, want %d %d", r.Up, r.Down, len(upData), len(downData))
	}
}

// With half-close passed on, a reply sent after the client's FIN still arrives.
func TestJoinHalfCloseDelayedReply(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			c := newChainOn(t, e, "tcp4", "127.0.0.1:0", Options{HalfClose: true})
			if _, err := c.user.Write([]byte("question")); err != nil {
				t.Fatal(err)
			}
			c.user.CloseWrite()
			buf := make([]byte, 8)
			if _, err := io.ReadFull(c.backend, buf); err != nil || string(buf) != "question" {
				t.Fatalf("backend read %q, %v", buf, err)
			}
			if n, err := c.backend.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("backend did not see the FIN: %d %v", n, err)
			}
			// The backend answers only after it has seen EOF.
			if _, err := c.backend.Write([]byte("answer")); err != nil {
				t.Fatal(err)
			}
			c.backend.CloseWrite()
			got, err := io.ReadAll(c.user)
			if err != nil || string(got) != "answer" {
				t.Fatalf("user got %q, %v; relay result %+v", got, err, c.wait(t))
			}
			r := c.wait(t)
			if r.End != EndClientClosed || r.Up != 8 || r.Down != 6 {
				t.Fatalf("result %+v", r)
			}
		})
	}
}

// By default the first side to end closes both, after its bytes were delivered.
func TestJoinCloseBoth(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			c := newChainOn(t, e, "tcp4", "127.0.0.1:0", Options{})
			data := randomBytes(t, 3<<20)
			errc := make(chan error, 1)
			go sendAndHash(c.user, data, errc)
			n, sum, err := readAll(c.backend)
			if err != nil || n != len(data) || sum != sha256.Sum256(data) {
				t.Fatalf("backend got %d bytes (want %d), err %v", n, len(data), err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			r := c.wait(t)
			if r.End != EndClientClosed || r.Up != int64(len(data)) {
				t.Fatalf("result %+v", r)
			}
			// The user's side is closed too, without waiting for the backend.
			c.user.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(c.user); err != nil {
				t.Fatalf("user read: %v", err)
			}
		})
	}
}

// A reset from the client reaches the backend as a reset.
func TestJoinResetPassthrough(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			for _, fromClient := range []bool{true, false} {
				c := newChainOn(t, e, "tcp4", "127.0.0.1:0", Options{HalfClose: true})
				resetter, victim := c.user, c.backend
				want := EndClientReset
				if !fromClient {
					resetter, victim, want = c.backend, c.user, EndServerReset
				}
				if _, err := resetter.Write([]byte("partial upload")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 14)
				if _, err := io.ReadFull(victim, buf); err != nil {
					t.Fatal(err)
				}
				resetter.SetLinger(0)
				resetter.Close()
				victim.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err := io.ReadAll(victim)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("fromClient=%v: victim read err %v, want connection reset", fromClient, err)
				}
				if r := c.wait(t); r.End != want {
					t.Errorf("fromClient=%v: End %q, want %q", fromClient, r.End, want)
				}
			}
		})
	}
}

func TestJoinIdleTimeout(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			c := newChainOn(t, e, "tcp4", "127.0.0.1:0", Options{HalfClose: true, IdleTimeout: 200 * time.Millisecond})
			if _, err := c.user.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			r := c.wait(t)
			if r.End != EndIdle || r.Up != 1 {
				t.Fatalf("result %+v", r)
			}
			if r.Duration < 200*time.Millisecond {
				t.Fatalf("closed after %v, before the idle timeout", r.Duration)
			}
		})
	}
}

func TestJoinStopOnCancel(t *testing.T) {
	relayClient, _ := pair(t, "tcp4", "127.0.0.1:0")
	_, relayServer := pair(t, "tcp4", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() { done <- Join(ctx, relayClient, relayServer, Options{Rate: 1024}) }()
	cancel()
	select {
	case r := <-done:
		if r.End != EndStopped {
			t.Fatalf("End %q", r.End)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Join ignored cancellation")
	}
}

func TestCopyProgressAndRate(t *testing.T) {
	a, b := pair(t, "tcp4", "127.0.0.1:0")
	data := randomBytes(t, 300<<10)
	go func() { a.Write(data); a.CloseWrite() }()
	var progress int64
	var out bytes.Buffer
	n, err := Copy(context.Background(), &out, b, CopyOptions{Progress: func(n int64) { progress += n }, Chunk: 64 << 10, Tick: time.Second})
	if err != nil || n != int64(len(data)) || progress != n || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("n=%d progress=%d err=%v equal=%v", n, progress, err, bytes.Equal(out.Bytes(), data))
	}
}
