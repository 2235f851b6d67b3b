package main

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// flow is one direction of a transfer through the tunnel: a sender that writes up to
// limit bytes of stream seed (counting them as it goes), and a receiver that digests what
// comes once released.
type flow struct {
	sent    atomic.Int64
	sendErr chan error
	got     chan testkit.ReadEnd
	digest  chan testkit.Digest
	release chan struct{}
}

func newFlow() *flow {
	return &flow{sendErr: make(chan error, 1), got: make(chan testkit.ReadEnd, 1), digest: make(chan testkit.Digest, 1), release: make(chan struct{})}
}

// countingWriter counts into n what reaches w.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// send writes up to limit bytes of stream seed to c, then reports how that ended.
func (f *flow) send(c net.Conn, seed uint64, limit int64) {
	_, err := io.Copy(countingWriter{c, &f.sent}, io.LimitReader(testkit.NewStream(seed), limit))
	f.sendErr <- err
}

// receive reads c to its end once released, and reports the digest and the end.
func (f *flow) receive(c net.Conn) {
	<-f.release
	_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
	d := testkit.NewDigester()
	_, err := io.Copy(d, c)
	if err == nil {
		err = io.EOF
	}
	f.digest <- d.Digest()
	f.got <- testkit.ReadEnd{N: d.Digest().N, Err: err}
}

// waitStalled waits until the sender has written nothing for 200 ms (40 looks): every
// buffer on the way to the receiver that does not read is full, and the relays' writes
// wait.
func (f *flow) waitStalled(t *testing.T) {
	t.Helper()
	last, still := int64(-1), 0
	testkit.WaitUntil(t, 10*time.Second, "the transfer to stall on the reader that does not read", func() bool {
		n := f.sent.Load()
		if n == last && n > 0 {
			still++
		} else {
			last, still = n, 0
		}
		return still >= 40
	})
}

// TestAttackStopWithTLSLinkFull: SIGTERM or SIGINT to the program whose write into a TLS
// link waits, because the far end of the transfer reads nothing and every buffer on the
// way is full: listentwo while a client uploads to a service that does not read, and
// connecttwo while the service sends to a client that does not read (over IPv4). The
// program must exit 0 within a second, and the receiver, when it reads at last, must find
// a prefix of the stream and then a reset, never a clean end.
func TestAttackStopWithTLSLinkFull(t *testing.T) {
	bins := tunneltest.Build(t)
	const limit = 256 << 20 // the transfer stalls long before
	for _, who := range []string{"listentwo", "connecttwo"} {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			t.Run(who+"/"+sig.String(), func(t *testing.T) {
				f := newFlow()
				svc := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
					if who == "listentwo" { // the upload's receiver
						f.receive(c)
					} else {
						f.send(c, 9, limit)
					}
				})
				relay, agent, clients, _ := tlsTunnel(t, bins, "127.0.0.1", svc.Addr())
				c := testkit.Dial(t, clients)
				if who == "listentwo" {
					go f.send(c, 9, limit)
				} else {
					go f.receive(c)
				}
				f.waitStalled(t)
				p := map[string]*testkit.Proc{"listentwo": relay, "connecttwo": agent}[who]
				p.Signal(t, sig)
				code, took := p.Exit(t, 10*time.Second)
				t.Logf("%s exited %d in %v after %v, with %d bytes sent", who, code, took.Round(time.Millisecond), sig, f.sent.Load())
				if code != 0 || took > time.Second {
					t.Errorf("%s exited %d in %v after %v with its write into the TLS link waiting; want 0 within 1s", who, code, took.Round(time.Millisecond), sig)
				}
				close(f.release)
				end, d := <-f.got, <-f.digest
				if want := testkit.Expected(9, d.N); d != want {
					t.Errorf("the receiver got %v, not the stream's first %d bytes", d, d.N)
				}
				if !errors.Is(end.Err, syscall.ECONNRESET) {
					t.Errorf("the receiver read %d of the %d bytes sent, then %v; want a reset", end.N, f.sent.Load(), end.Err)
				}
				p.Log.WaitFor(t, `stopping: cutting open relays`, 1, testkit.Timeout)
				p.Log.WaitFor(t, `close #1 .* end="cut: stopped"$`, 1, testkit.Timeout)
				if lines := p.Log.Find(`close #1 `); len(lines) == 1 && strings.Contains(lines[0], "closed\"") {
					t.Errorf("%s logged a clean end: %s", who, lines[0])
				}
			})
		}
	}
}

// TestAttackStopMidTLSTransfer: SIGTERM or SIGINT to either program in the middle of a
// client's 32 MiB echo through a TLS link (over IPv6), once 4 MiB have come back; and the
// same with the other signal sent at once after it (a second signal during the stop, as
// an impatient supervisor sends: it must not kill the program, nor change how it ends).
// The program must exit 0 within a second and log the cut (`end="cut: stopped"`); the
// other program must not log a clean end; the client and the service must each have
// received a prefix of what the other sent, and see a reset, never a clean end.
func TestAttackStopMidTLSTransfer(t *testing.T) {
	bins := tunneltest.Build(t)
	const size = 32 << 20
	for _, tc := range []struct {
		who       string
		sig, also syscall.Signal
	}{
		{"listentwo", syscall.SIGTERM, 0},
		{"listentwo", syscall.SIGINT, syscall.SIGTERM},
		{"connecttwo", syscall.SIGINT, 0},
		{"connecttwo", syscall.SIGTERM, syscall.SIGINT},
	} {
		name := tc.who + "/" + tc.sig.String()
		if tc.also != 0 {
			name += "+" + tc.also.String()
		}
		t.Run(name, func(t *testing.T) {
			svcEnd := make(chan testkit.ReadEnd, 1)
			svcGot := make(chan testkit.Digest, 1)
			svc := testkit.StartBackend(t, "[::1]:0", func(c *net.TCPConn) {
				d := testkit.NewDigester()
				_, err := io.Copy(io.MultiWriter(c, d), c) // the echo, digested
				if err == nil {
					err = io.EOF
				}
				svcGot <- d.Digest()
				svcEnd <- testkit.ReadEnd{N: d.Digest().N, Err: err}
			})
			relay, agent, clients, _ := tlsTunnel(t, bins, "::1", svc.Addr())
			c := testkit.Dial(t, clients)
			_ = c.SetDeadline(time.Now().Add(testkit.Timeout))
			sendErr := make(chan error, 1)
			go func() {
				_, err := testkit.Send(c, 5, size)
				sendErr <- err
			}()
			back := testkit.NewDigester()
			if _, err := io.CopyN(back, c, 4<<20); err != nil {
				t.Fatalf("the first 4 MiB of the echo: %v", err)
			}
			p, other := relay, agent
			if tc.who == "connecttwo" {
				p, other = agent, relay
			}
			p.Signal(t, tc.sig)
			if tc.also != 0 {
				p.Signal(t, tc.also)
			}
			code, took := p.Exit(t, 10*time.Second)
			if code != 0 || took > time.Second {
				t.Errorf("%s exited %d in %v after %s, a transfer under way; want 0 within 1s", tc.who, code, took, name)
			}
			_, readErr := io.Copy(back, c)
			wErr := <-sendErr
			got := back.Digest()
			t.Logf("%s exited in %v; the client got %d bytes back, then %v; its send ended with %v", tc.who, took.Round(time.Millisecond), got.N, readErr, wErr)
			if want := testkit.Expected(5, got.N); got != want || got.N >= size {
				t.Errorf("the client got %v back, not a strict prefix of what it sent", got)
			}
			// Linux reports a peer's reset once: to the read or to the write that comes first.
			if !errors.Is(readErr, syscall.ECONNRESET) && !errors.Is(wErr, syscall.ECONNRESET) {
				t.Errorf("the client's read ended with %v and its send with %v; want a reset", readErr, wErr)
			}
			select {
			case end := <-svcEnd:
				d := <-svcGot
				if want := testkit.Expected(5, d.N); d != want {
					t.Errorf("the service got %v, not a prefix of what the client sent", d)
				}
				if !errors.Is(end.Err, syscall.ECONNRESET) {
					t.Errorf("the service's connection ended with %v after %d bytes, want a reset", end.Err, end.N)
				}
			case <-time.After(testkit.Timeout):
				t.Fatal("the service's connection did not end")
			}
			p.Log.WaitFor(t, `close #1 .* end="cut: stopped"$`, 1, testkit.Timeout)
			for _, line := range other.Log.WaitFor(t, `close #1 `, 1, testkit.Timeout) {
				if strings.Contains(line, `closed"`) {
					t.Errorf("the other program logged a clean end: %s", line)
				}
			}
		})
	}
}
