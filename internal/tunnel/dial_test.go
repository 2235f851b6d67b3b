package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// linkPort is a relay's link port on host that runs behave on each link it accepts
// (serveEach), and counts them.
func linkPort(t *testing.T, host string, behave func(c *net.TCPConn)) (*net.TCPListener, *atomic.Int64) {
	t.Helper()
	ln := listen(t, host)
	var accepts atomic.Int64
	serveEach(t, ln, func(c *net.TCPConn) {
		accepts.Add(1)
		behave(c)
	})
	return ln, &accepts
}

// readOpening reads the link's opening off c, failing the test's goroutine quietly (the
// agent's log tells) when it is not there.
func readOpening(c *net.TCPConn) bool {
	b := make([]byte, len(opening))
	_, err := io.ReadFull(c, b)
	return err == nil && string(b) == opening
}

// TestLoopLinkHandshakeFailures: a plain link's connect and handshake run on an event loop;
// each way a relay can fail them ends the link with the words of the goroutine path and the
// backoff of its class, and the link is retried under its number. A relay that accepts
// and says nothing and one that cuts its greeting in the middle (closed or reset) are cut
// links, retried after at most RefusedMax; a line longer than 256 bytes is a relay that
// is not listentwo, retried with the full, growing backoff. IPv4 and IPv6 loopback.
func TestLoopLinkHandshakeFailures(t *testing.T) {
	const refusedMax = 40 * time.Millisecond
	cases := []struct {
		name   string
		behave func(c *net.TCPConn)
		log    string // the failure, after "failed: "
		cut    bool   // retried after at most refusedMax
	}{
		{"silent", func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) },
			`reading greeting: handshake timed out`, true},
		{"greeting closed midway", func(c *net.TCPConn) {
			if readOpening(c) {
				_, _ = io.WriteString(c, protoName+" hello=none auth=no")
			}
		}, `reading greeting: connection closed during handshake`, true},
		{"greeting reset midway", func(c *net.TCPConn) {
			if readOpening(c) {
				_, _ = io.WriteString(c, protoName+" hello=none auth=no")
				time.Sleep(20 * time.Millisecond) // the piece goes out alone; the check does not need it
				_ = c.SetLinger(0)
			}
		}, `reading greeting: (read: connection reset by peer|connection closed during handshake)`, true},
		{"oversize line", func(c *net.TCPConn) {
			if readOpening(c) {
				_, _ = io.WriteString(c, strings.Repeat("x", 300))
				_, _ = io.Copy(io.Discard, c)
			}
		}, `reading greeting: line longer than 256 bytes`, false},
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, tc := range cases {
			t.Run(host+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				svc := startService(t, host, echoMode)
				ln, accepts := linkPort(t, host, tc.behave)
				var tn tunnel
				startAgent(t, AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 1,
					HandshakeTimeout: 150 * time.Millisecond, BackoffBase: 20 * time.Millisecond,
					BackoffMax: 5 * time.Second, RefusedMax: refusedMax}, &tn)
				want := fmt.Sprintf(`link #1 to %s failed: %s; retry 3 in`, regexpQuote(epOf(t, ln.Addr()).String()), tc.log)
				tn.agentLog.wait(want)
				if n := accepts.Load(); n < 3 {
					t.Errorf("the relay saw %d links, want at least 3 (a first try and its retries)", n)
				}
				if tn.agentLog.count(`link #2 `) != 0 {
					t.Errorf("a retry took a new link number:\n%s", tn.agentLog)
				}
				d := retryDelays(tn.agentLog.String())
				switch {
				case len(d) < 3:
					t.Fatalf("retry delays %v, want 3:\n%s", d, tn.agentLog)
				case tc.cut && d[2] > refusedMax.Seconds():
					t.Errorf("retry delays %v: a cut handshake must wait at most %v", d, refusedMax)
				case !tc.cut && d[2] < 0.040: // the third step is 40-80 ms
					t.Errorf("retry delays %v: a relay that is not listentwo takes the full backoff, 40-80 ms at the third", d)
				}
				if got := tn.agent.IdleLinks(); got != 0 {
					t.Errorf("%d idle links, want 0", got)
				}
			})
		}
	}
}

// TestLoopLinkHandshakeInPieces: a relay that sends its greeting in pieces, and its verdict
// with the client's first bytes right behind it in one write: the loop reads each line as
// its bytes come, the link comes up (logged with its own and the relay's address), and the
// bytes after the verdict take the link at once and reach the service, whose echo comes
// back on the link. With a secret both ways, over IPv4 and IPv6 loopback.
func TestLoopLinkHandshakeInPieces(t *testing.T) {
	secret := []byte("s3cret")
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			data := make([]byte, 64<<10)
			_, _ = rand.Read(data)
			echoed := make(chan []byte, 1)
			report := func(b []byte) { // the first link's end; later links' (replacements, a burst's) are not checked
				select {
				case echoed <- b:
				default:
				}
			}
			ln, _ := linkPort(t, host, func(c *net.TCPConn) {
				if !readOpening(c) {
					report(nil)
					return
				}
				g := offer{auth: true}
				_, _ = rand.Read(g.nonce[:])
				greeting := []byte(g.text() + "\n")
				for _, piece := range [][]byte{greeting[:5], greeting[5:40], greeting[40:]} {
					if _, err := c.Write(piece); err != nil {
						report(nil)
						return
					}
					time.Sleep(10 * time.Millisecond) // likely separate segments; the check does not need it
				}
				reply, err := readLineConn(c)
				if err != nil {
					report(nil)
					return
				}
				proof := linkMAC(secret, labelServer, nil, greeting, []byte(reply))
				if _, err := c.Write(append([]byte("OK mac="+macText(proof)+"\n"), data...)); err != nil {
					report(nil)
					return
				}
				_ = c.CloseWrite()
				b, _ := io.ReadAll(c)
				report(b)
			})
			var tn tunnel
			startAgent(t, AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 1, Secret: secret}, &tn)
			var got []byte
			select {
			case got = <-echoed:
			case <-time.After(testTimeout):
				t.Fatalf("no echo on the link:\n%s", tn.agentLog)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("the link got back %d bytes, want the %d sent:\n%s", len(got), len(data), tn.agentLog)
			}
			local := `127\.0\.0\.1:\d+`
			if host == "::1" {
				local = `\[::1\]:\d+`
			}
			tn.agentLog.wait(fmt.Sprintf(`link #1 up %s -> %s`, local, regexpQuote(epOf(t, ln.Addr()).String())))
			tn.agentLog.wait(fmt.Sprintf(`close #1 link #1 %s -> %s .*65536`, regexpQuote(epOf(t, ln.Addr()).String()), regexpQuote(svc.ep(t).String())))
		})
	}
}

// TestLoopLinkStopInHandshake: the end of Run's context ends a plain link's handshake on
// its loop at once: Run returns well before the handshake's deadline, and the relay sees
// the link closed.
func TestLoopLinkStopInHandshake(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			closed := make(chan struct{}, 8)
			ln, accepts := linkPort(t, host, func(c *net.TCPConn) {
				readOpening(c)
				_, _ = io.Copy(io.Discard, c) // until connecttwo closes the link
				closed <- struct{}{}
			})
			svc := startService(t, host, echoMode)
			a, err := NewAgent(AgentConfig{Relay: epOf(t, ln.Addr()), Service: svc.ep(t), Pool: 4, Log: newSink(t, "connecttwo").logger()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			deadline := time.Now().Add(testTimeout)
			for accepts.Load() < 4 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if accepts.Load() < 4 {
				cancel()
				t.Fatalf("the relay saw %d links, want 4", accepts.Load())
			}
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("Run did not return after its context ended")
			}
			if took := time.Since(start); took > 2500*time.Millisecond {
				t.Errorf("Run took %v to return in the handshake, want well under its 5 s deadline", took)
			}
			for i := range 4 {
				select {
				case <-closed:
				case <-time.After(testTimeout):
					t.Fatalf("the relay saw %d of 4 links closed", i)
				}
			}
		})
	}
}

// TestClientShakeAgainstServerShake runs connecttwo's handshake machine against
// listentwo's in memory, each side's bytes fed to the other whole or a byte at a time:
// with and without a secret and hellos the link comes up on both sides, and the bytes
// that follow the verdict come back as the link's first bytes; a mode that differs makes
// the client send its reply (so the relay logs the mismatch too) and fail; a wrong secret
// fails on the relay's side, whose ERR the client reports.
func TestClientShakeAgainstServerShake(t *testing.T) {
	cases := []struct {
		name                 string
		client, server       linkParams
		clientErr, serverErr string
	}{
		{"plain", linkParams{}, linkParams{}, "", ""},
		{"secret and hellos", linkParams{hello: true, secret: []byte("k")}, linkParams{hello: true, secret: []byte("k")}, "", ""},
		{"hello on one side", linkParams{hello: true}, linkParams{}, "hello mismatch: listentwo does not use hellos", "hello mismatch: connecttwo uses hellos"},
		{"wrong secret", linkParams{secret: []byte("a")}, linkParams{secret: []byte("b")}, "relay refused the link: authentication failed", "authentication failed"},
	}
	for _, tc := range cases {
		for _, step := range []int{maxLine, 1} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, step), func(t *testing.T) {
				tc.client.rand, tc.server.rand = rand.Reader, rand.Reader
				tc.server.timeout = time.Second
				srv := newServerShake(time.Now(), tc.server, serverHooks{admit: func() error { return nil }, release: func() {}})
				cli := clientShake{p: tc.client}
				// feed gives b to a machine step bytes at a time, as reads of at most room().
				feed := func(b []byte, room func() int, f func([]byte) bool) {
					for len(b) > 0 {
						n := min(step, len(b), room())
						if f(b[:n]) {
							return
						}
						b = b[n:]
					}
				}
				var toClient, toServer []byte
				var serverDone bool
				var serverErr error
				feedServer := func(b []byte) {
					feed(b, srv.room, func(p []byte) bool {
						send, done, err := srv.feed(p)
						toClient = append(toClient, send...)
						serverDone, serverErr = done, err
						return done
					})
				}
				feedServer([]byte(opening))
				if serverErr != nil || len(toClient) == 0 {
					t.Fatalf("the relay answered the opening with %q, %v", toClient, serverErr)
				}
				var rest []byte
				var clientDone bool
				var clientErr error
				for round := 0; round < 2 && !clientDone; round++ {
					in := append(toClient, "first bytes"...) // what follows a verdict: the client's
					if round == 0 {
						in = toClient
					}
					toClient = nil
					feed(in, cli.room, func(p []byte) bool {
						send, done, r, err := cli.feed(p)
						toServer = append(toServer, send...)
						clientDone, clientErr = done, err
						if done {
							rest = r // a byte at a time: empty, the rest still unread
						}
						return done || err != nil
					})
					if len(toServer) > 0 && !serverDone {
						feedServer(toServer)
						toServer = nil
					}
				}
				check := func(who string, err error, want string) {
					t.Helper()
					switch {
					case want == "" && err != nil:
						t.Errorf("%s: %v, want the link up", who, err)
					case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
						t.Errorf("%s: %v, want an error with %q", who, err, want)
					}
				}
				check("connecttwo", clientErr, tc.clientErr)
				check("listentwo", serverErr, tc.serverErr)
				if !clientDone || !serverDone {
					t.Errorf("handshake not over: connecttwo %v, listentwo %v", clientDone, serverDone)
				}
				if tc.clientErr == "" && step == maxLine && string(rest) != "first bytes" {
					t.Errorf("the bytes after the verdict came back as %q, want %q", rest, "first bytes")
				}
			})
		}
	}
}
