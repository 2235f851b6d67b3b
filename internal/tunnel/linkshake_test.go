package tunnel

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestServerShakeChunks: the handshake's machine gives the same greeting checks and
// verdict whether the lines come whole or a byte at a time, refuses a line of 256 bytes
// without its LF, and bytes after the opening or the reply.
func TestServerShakeChunks(t *testing.T) {
	type step struct {
		in    string
		send  string // prefix of what the machine answers
		done  bool
		err   string
		reply bool // in is the reply to the greeting just sent (filled in by the test)
	}
	reply := func(greeting []byte, extra string) string {
		g, err := parseGreeting(greeting)
		if err != nil {
			t.Fatalf("greeting %q: %v", greeting, err)
		}
		r := offer{hello: g.hello, auth: false}
		return r.text() + " mac=-\n" + extra
	}
	for _, tc := range []struct {
		name  string
		steps []step
		extra string // after the reply
		whole bool   // only when the bytes after a line come in the same read
	}{
		{name: "ok", steps: []step{{in: opening, send: protoName + " hello=none auth=none nonce="}, {reply: true, send: "OK mac=-\n", done: true}}},
		{name: "not the opening", steps: []step{{in: "GET / HTTP/1.1\r\n", done: true, err: "not a link: its first line is not the opening"}}},
		{name: "after the opening", whole: true, steps: []step{{in: opening + "x", done: true, err: "unexpected data after the opening"}}},
		{name: "long opening", steps: []step{{in: strings.Repeat("A", maxLine), done: true, err: "reading opening: line longer than 256 bytes"}}},
		{name: "after the reply", whole: true, extra: "x", steps: []step{{in: opening, send: protoName}, {reply: true, send: "ERR unexpected data after the reply\n", done: true, err: "unexpected data after the reply"}}},
		{name: "long reply", steps: []step{{in: opening, send: protoName}, {in: strings.Repeat("B", maxLine), done: true, err: "reading reply: line longer than 256 bytes"}}},
	} {
		for _, chunk := range []int{0, 1, 7} { // 0: whole
			if tc.whole && chunk > 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/chunk %d", tc.name, chunk), func(t *testing.T) {
				admitted := 0
				s := newServerShake(time.Now(), linkParams{rand: rand.Reader, timeout: time.Minute},
					serverHooks{admit: func() error { admitted++; return nil }, release: func() { admitted-- }})
				var greeting []byte
				for i, st := range tc.steps {
					in := st.in
					if st.reply {
						in = reply(greeting, tc.extra)
					}
					var send []byte
					var done bool
					var err error
					for len(in) > 0 {
						n := len(in)
						if chunk > 0 {
							n = min(chunk, n)
						}
						if n > s.room() {
							t.Fatalf("step %d: %d bytes to feed, room for %d", i, n, s.room())
						}
						var out []byte
						out, done, err = s.feed([]byte(in[:n]))
						send = append(send, out...)
						in = in[n:]
						if done || err != nil {
							break
						}
					}
					if !strings.HasPrefix(string(send), st.send) || done != st.done {
						t.Fatalf("step %d: sent %q, done %v; want %q..., done %v", i, send, done, st.send, st.done)
					}
					if st.err == "" && err != nil || st.err != "" && (err == nil || !strings.Contains(err.Error(), st.err)) {
						t.Fatalf("step %d: err %v, want %q", i, err, st.err)
					}
					greeting = send
				}
				if want := 0; tc.name == "ok" {
					if admitted != 1 {
						t.Errorf("admitted %d times, want once", admitted)
					}
				} else if admitted != want {
					t.Errorf("a refused link was admitted")
				}
			})
		}
	}
}

// dripConn writes each byte on its own, a millisecond apart: lines that come in many
// segments.
type dripConn struct{ net.Conn }

func (d dripConn) Write(b []byte) (int, error) {
	for i := range b {
		if _, err := d.Conn.Write(b[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(time.Millisecond) // the drip itself, not a wait for anything
	}
	return len(b), nil
}

// TestLinkShakeOnLoop drives a plain link's handshake on the relay's loop by hand, over
// IPv4 and IPv6 loopback: a link whose lines drip in a byte at a time joins the pool and
// carries a client's bytes (checked by SHA-256); the stranger protections hold as on the
// goroutine path (silence, a slow opening, a slow reply, lines of 256 bytes, bytes after
// the opening or the reply, TLS on the agent's side only), each closed with its words in
// the log and nothing sent that it should not get.
func TestLinkShakeOnLoop(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			p := params(false, "s3cret")
			t.Run("drip", func(t *testing.T) { // with the default timeouts: a drip takes a while on a loaded machine
				var tn tunnel
				startRelay(t, host, RelayConfig{Wait: testTimeout, Secret: []byte("s3cret")}, &tn)
				// A link that drips: it joins, and a client's bytes cross it both ways.
				link := dial(t, tn.links)
				if _, err := clientHandshake(dripConn{link}, p); err != nil {
					t.Fatalf("dripping handshake: %v\n%s", err, tn.relayLog)
				}
				tn.waitPools(t, 0, 1)
				tn.relayLog.wait(`link #\d+ up `)
				go func() { // the agent's side: echo what the client sends
					_ = link.SetDeadline(time.Now().Add(testTimeout))
					_, _ = io.Copy(link, link)
					_ = link.CloseWrite()
				}()
				if _, err := roundTrip(dial(t, tn.clients), 256<<10, 0); err != nil {
					t.Fatalf("client through the dripped link: %v", err)
				}
			})

			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout, Secret: []byte("s3cret"),
				FirstByte: 300 * time.Millisecond, HandshakeTimeout: 400 * time.Millisecond}, &tn)
			opened := func(t *testing.T) *net.TCPConn { // a link past its opening
				c := dial(t, tn.links)
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				if _, err := io.WriteString(c, opening); err != nil {
					t.Fatal(err)
				}
				if g, err := readLineConn(c); err != nil || !strings.HasPrefix(g, protoName+" hello=none auth=hmac-sha256 nonce=") {
					t.Fatalf("greeting %q, %v", g, err)
				}
				return c
			}
			for _, tc := range []struct {
				name string
				run  func(t *testing.T) net.Conn // the stranger, having done its part
				got  string                      // what it is sent before the end
				log  string
			}{
				{"silent", func(t *testing.T) net.Conn { return dial(t, tn.links) }, "", `sent nothing within 300ms`},
				{"slow opening", func(t *testing.T) net.Conn {
					c := dial(t, tn.links)
					io.WriteString(c, "SHD-")
					return c
				}, "", `reading opening: handshake timed out`},
				{"long opening", func(t *testing.T) net.Conn {
					c := dial(t, tn.links)
					io.WriteString(c, strings.Repeat("A", 300))
					return c
				}, "", `reading opening: line longer than 256 bytes`},
				{"after the opening", func(t *testing.T) net.Conn {
					c := dial(t, tn.links)
					io.WriteString(c, opening+"more")
					return c
				}, "", `unexpected data after the opening`},
				{"tls", func(t *testing.T) net.Conn {
					c := dial(t, tn.links)
					c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
					return c
				}, "ERR " + errTLSAgentOnly + "\n", `connecttwo uses TLS`},
				{"slow reply", func(t *testing.T) net.Conn { return opened(t) }, "", `reading reply: handshake timed out`},
				{"long reply", func(t *testing.T) net.Conn {
					c := opened(t)
					io.WriteString(c, strings.Repeat("B", 300))
					return c
				}, "", `reading reply: line longer than 256 bytes`},
				{"after the reply", func(t *testing.T) net.Conn {
					c := opened(t)
					io.WriteString(c, protoName+" hello=none auth=hmac-sha256 nonce="+strings.Repeat("00", 32)+" mac="+strings.Repeat("00", 32)+"\nmore")
					return c
				}, "ERR unexpected data after the reply\n", `unexpected data after the reply`},
				{"wrong proof", func(t *testing.T) net.Conn {
					c := opened(t)
					io.WriteString(c, protoName+" hello=none auth=hmac-sha256 nonce="+strings.Repeat("00", 32)+" mac="+strings.Repeat("00", 32)+"\n")
					return c
				}, "ERR authentication failed: wrong secret or replayed exchange\n", `authentication failed`},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := tn.relayLog.count(`link #\d+ refused .*` + tc.log)
					c := tc.run(t)
					_ = c.SetReadDeadline(time.Now().Add(testTimeout))
					got, err := io.ReadAll(c)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatalf("not closed within %v", testTimeout)
					}
					if string(got) != tc.got {
						t.Errorf("sent %q, want %q", got, tc.got)
					}
					tn.relayLog.waitCount(`link #\d+ refused .*`+tc.log, before+1)
				})
			}
			if n := tn.relay.IdleLinks(); n != 0 {
				t.Errorf("%d idle links after the strangers, want 0", n)
			}
		})
	}
}

// TestStopDuringLoopHandshake: the end of Serve's context ends links in every phase of a
// loop handshake (a first byte, an opening under way, the greeting sent) at once: Serve returns within
// a second, each link is closed, and no refusal is logged for them.
func TestStopDuringLoopHandshake(t *testing.T) {
	var tn tunnel
	startRelay(t, "::1", RelayConfig{Wait: testTimeout}, &tn)
	var conns []*net.TCPConn
	for i := range 9 {
		c := dial(t, tn.links)
		switch i % 3 {
		case 0:
			io.WriteString(c, "S")
		case 1:
			io.WriteString(c, "SHD-L")
		case 2:
			io.WriteString(c, opening)
			_ = c.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := readLineConn(c); err != nil {
				t.Fatalf("greeting: %v", err)
			}
		}
		conns = append(conns, c)
	}
	start := time.Now()
	tn.stopRelay()
	waitDone(t, "Relay.Serve", tn.relayDone)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Serve took %v to return with loop handshakes under way, want under 1s", took)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(testTimeout))
		if got, err := io.ReadAll(c); len(got) > 0 || isTimeout(err) {
			t.Errorf("link %d: read %q, %v after the stop; want its end", i, got, err)
		}
	}
	if n := tn.relayLog.count(`refused`); n != 0 {
		t.Errorf("%d refusals logged for links the stop ended:\n%s", n, tn.relayLog)
	}
}

// TestManyClientsFewLinks: 48 clients at once through one link at a time (the agent's
// pool of 1), over IPv4 and IPv6: each waits in the pool without a goroutine until the
// link made for it comes, and gets its own bytes back (length and SHA-256); none waits
// on after.
func TestManyClientsFewLinks(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svc := startService(t, host, echoMode)
			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			const clients = 48
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := range clients {
				c := dial(t, tn.clients)
				wg.Go(func() {
					if _, err := roundTrip(c, 32<<10+i, 0); err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				t.Logf("relay:\n%s", testkitTail(tn.relayLog.String()))
			}
			if err := tn.relay.pool.waitUntil(ctxT(t), func(_, waiting int) bool { return waiting == 0 }); err != nil {
				t.Errorf("%d clients still waiting", tn.relay.WaitingClients())
			}
			if n := tn.relayLog.count(`^\S+ open #`); n != clients {
				t.Errorf("%d open lines, want %d", n, clients)
			}
		})
	}
}

func testkitTail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// TestPoolCallbackWaiters checks waiters without a goroutine in a bubble: links go to
// them in order, each is given up exactly at its deadline by the pool's one timer, a
// client whose link died keeps its turn, and cancel gives up those left.
func TestPoolCallbackWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool[*fakeLink](4)
		start := time.Now()
		var mu sync.Mutex
		var got []string
		wait := func(name string, d time.Duration, front bool) {
			w := &waiter[*fakeLink]{deadline: time.Now().Add(d),
				give: func(l *fakeLink) { mu.Lock(); got = append(got, name+"="+l.name); mu.Unlock() },
				fail: func(err error) {
					mu.Lock()
					got = append(got, fmt.Sprintf("%s:%v@%v", name, err, time.Since(start)))
					mu.Unlock()
				}}
			if _, ok := p.getOr(w, front); ok {
				t.Fatalf("%s got a link from an empty pool", name)
			}
		}
		wait("a", 30*time.Second, false)
		time.Sleep(time.Second) // the bubble's clock
		wait("b", 30*time.Second, false)
		wait("c", 10*time.Second, true) // its link died: it goes first, with its own deadline
		wait("d", time.Hour, false)
		p.reserve()
		p.put(&fakeLink{"x"}, nil)
		time.Sleep(time.Minute)
		synctest.Wait()
		p.cancel(context.Canceled)
		want := []string{"c=x", "a:no idle link@30s", "b:no idle link@31s", "d:context canceled@1m1s"}
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("got  %v\nwant %v", got, want)
		}
		if p.waiting() != 0 || p.timer != nil {
			t.Errorf("%d waiting, timer %v after the cancel", p.waiting(), p.timer)
		}
	})
}

// wrapped hides a listener's type, so the relay takes its connections through Accept.
type wrapped struct{ net.Listener }

// TestRawAndAcceptedClients: a plain relay serves clients and links accepted as raw
// sockets and, from listeners that are not a *net.TCPListener, through Accept, over IPv4
// and IPv6; on the raw path a client that is silent when accepted waits in the client room
// (as a *net.TCPConn) and is served once it speaks, with hellos naming it as HAProxy would.
func TestRawAndAcceptedClients(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host+"/accepted", func(t *testing.T) {
			svc := startService(t, host, echoMode)
			tn := tunnel{relayLog: newSink(t, "listentwo")}
			tn.clients, tn.links = listen(t, host), listen(t, host)
			r, err := NewRelay(RelayConfig{Clients: epOf(t, tn.clients.Addr()), Links: epOf(t, tn.links.Addr()), Wait: testTimeout, Log: tn.relayLog.logger()})
			if err != nil {
				t.Fatal(err)
			}
			tn.relay = r
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Serve(ctx, wrapped{tn.clients}, wrapped{tn.links}) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			})
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 2}, &tn)
			tn.waitPools(t, 2, 2)
			for i := range 6 {
				if _, err := roundTrip(dial(t, tn.clients), 64<<10+i, 0); err != nil {
					t.Fatalf("client %d: %v\n%s", i, err, tn.relayLog)
				}
			}
		})
		t.Run(host+"/silent then speaks", func(t *testing.T) {
			svc := startService(t, host, echoMode)
			var tn tunnel
			startRelay(t, host, RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			c := dial(t, tn.clients)
			// The kernel holds a silent client for about a second (deferred accept), then
			// the relay takes it into its room.
			deadline := time.Now().Add(testTimeout)
			for tn.relay.clientRoom.len() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the silent client never reached the client room")
				}
				time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
			}
			if _, err := roundTrip(c, 100<<10, 0); err != nil {
				t.Fatalf("the client that spoke late: %v\n%s", err, tn.relayLog)
			}
			if n := tn.relay.clientRoom.len(); n != 0 {
				t.Errorf("client room holds %d after the client was served", n)
			}
		})
	}
}
