package metrics

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// states counts k's connections by state.
func (k *connCap) states() map[http.ConnState]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := map[http.ConnState]int{}
	for _, e := range k.conns {
		n[e.state]++
	}
	return n
}

// read reports whether the server has read every byte its connections were sent (none
// waits in a socket), so that they are where the test put them.
func (k *connCap) read() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for c := range k.conns {
		if pending(c) {
			return false
		}
	}
	return true
}

// closed reports whether the server closed c: a read that ends rather than times out.
func closed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue // a response's tail
		}
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
}

// waitClosed waits until the server has closed c, or fails the test.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	testkit.WaitUntil(t, testkit.Timeout, what+" closed", func() bool { return closed(c) })
}

// TestConnCapOrder: with the cap full, each connection past it closes the one that got
// least far, oldest first: silent ones, then one in the middle of its header (a slow
// loris), then one idle between requests; one whose request is being answered is never
// closed; and a scrape always gets through. On both loopbacks, with a cap of 4.
func TestConnCapOrder(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			k := newConnCap(4)
			release := make(chan struct{})
			answering := make(chan struct{}, 1)
			mux := http.NewServeMux()
			mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
				answering <- struct{}{}
				<-release
				io.WriteString(w, "slow\n")
			})
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
			ln := testkit.Listen(t, net.JoinHostPort(host, "0"))
			srv := &http.Server{Handler: mux, ConnState: k.connState}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { close(release); srv.Close() })
			addr := ln.Addr().String()
			waitStates := func(what string, cond func(map[http.ConnState]int) bool) {
				t.Helper()
				testkit.WaitUntil(t, testkit.Timeout, what, func() bool { return cond(k.states()) })
			}
			get := func(c net.Conn, path string) {
				t.Helper()
				if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) == "" {
					t.Fatalf("GET %s: %s %q", path, resp.Status, b)
				}
			}

			busy := testkit.Dial(t, addr) // its request is answered until release
			if _, err := io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			<-answering
			idle := testkit.Dial(t, addr) // keep-alive, after one request
			get(idle, "/")
			waitStates("an idle connection", func(n map[http.ConnState]int) bool { return n[http.StateIdle] == 1 })
			loris := testkit.Dial(t, addr) // part of a header, then nothing
			if _, err := io.WriteString(loris, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				t.Fatal(err)
			}
			silent := testkit.Dial(t, addr)
			waitStates("4 connections", func(n map[http.ConnState]int) bool { return n[http.StateNew] == 2 })
			testkit.WaitUntil(t, testkit.Timeout, "the slow loris's bytes read", k.read)
			// Past the cap: the slow loris goes (the oldest whose request is not read),
			// then the silent one; the newcomers stay.
			next := testkit.Dial(t, addr)
			waitClosed(t, loris, "the slow loris")
			last := testkit.Dial(t, addr)
			waitClosed(t, silent, "the silent connection")
			for _, c := range []net.Conn{busy, idle, next, last} {
				if closed(c) {
					t.Fatal("a connection was closed before the slow loris and the silent one")
				}
			}
			// A scraper whose request has arrived is served: the oldest silent one (next)
			// makes room for it.
			scraper := testkit.Dial(t, addr)
			if _, err := io.WriteString(scraper, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, next, "the oldest silent connection")
			get(scraper, "/")
			// Silent newcomers make room for each other; the idle ones stay.
			testkit.Dial(t, addr)
			waitClosed(t, last, "the last silent connection")
			n1 := testkit.Dial(t, addr)
			n2 := testkit.Dial(t, addr)
			waitClosed(t, n1, "the silent newcomer before")
			for _, c := range []net.Conn{idle, scraper} {
				if closed(c) {
					t.Fatal("an idle connection was closed while silent ones were open")
				}
			}
			// With none silent, an idle one goes, the oldest: idle, not the scraper's.
			n2.Close()
			waitStates("no silent connection", func(n map[http.ConnState]int) bool { return n[http.StateNew] == 0 })
			get(testkit.Dial(t, addr), "/") // the cap again, with two idle ones and this one
			get(testkit.Dial(t, addr), "/")
			waitClosed(t, idle, "the idle connection")
			if closed(scraper) {
				t.Fatal("the newer idle connection was closed before the older")
			}
			if closed(busy) {
				t.Fatal("the connection whose request was being answered was closed")
			}
			release <- struct{}{}
			_ = busy.SetReadDeadline(time.Now().Add(testkit.Timeout))
			resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("the answered request: %v", err)
			}
		})
	}
}
