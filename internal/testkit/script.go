package testkit

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// Timeout bounds every wait these commands do.
const Timeout = 10 * time.Second

// ScriptCmds returns the testscript commands every tool's CLI tests share, for
// testscript.Params.Cmds (a test may add its own, or replace "status" with Status(check)):
//
//	status N prog [args...]   run prog; its exit status must be N (stdout/stderr kept)
//	freeport VAR              set VAR to a loopback port that was free a moment ago
//	busyport VAR              hold a listening loopback port for the script; set VAR to it
//	waitport HOST:PORT        wait until something accepts connections there
//	echoserver VAR            run an echo service on loopback; set VAR to its port
//	[!] roundtrip HOST:PORT N send N random bytes, half-close, and check the echo's SHA-256
//	sigterm                   send SIGTERM to every background program of the script
//	closer VAR                listen on loopback, set VAR to the port, close each connection
//	waitclosed VAR N          wait until the closer set up as VAR has accepted N connections
func ScriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	cl := &closers{byKey: map[closerKey]*closerState{}}
	return map[string]func(*testscript.TestScript, bool, []string){
		"status":     Status(nil),
		"freeport":   freeport,
		"busyport":   busyport,
		"waitport":   waitport,
		"echoserver": echoserver,
		"roundtrip":  roundtrip,
		"sigterm":    sigterm,
		"closer":     cl.closer,
		"waitclosed": cl.waitclosed,
	}
}

// closers holds the closer listeners of the scripts that one ScriptCmds map serves.
type closers struct {
	mu    sync.Mutex
	byKey map[closerKey]*closerState
}

type closerKey struct {
	ts   *testscript.TestScript
	name string
}

type closerState struct {
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

// closer listens on loopback, sets VAR to the port, and closes every connection it
// accepts at once, counting them: a relay that hangs up on every link.
func (cl *closers) closer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: closer VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	st := &closerState{changed: make(chan struct{})}
	key := closerKey{ts, args[0]}
	cl.mu.Lock()
	cl.byKey[key] = st
	cl.mu.Unlock()
	done := make(chan struct{})
	ts.Defer(func() {
		ln.Close()
		<-done
		cl.mu.Lock()
		delete(cl.byKey, key)
		cl.mu.Unlock()
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			st.mu.Lock()
			st.n++
			close(st.changed)
			st.changed = make(chan struct{})
			st.mu.Unlock()
		}
	}()
	ts.Setenv(args[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// waitclosed waits until the closer started as VAR has accepted N connections.
func (cl *closers) waitclosed(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitclosed VAR N")
	}
	want, err := strconv.Atoi(args[1])
	ts.Check(err)
	cl.mu.Lock()
	st, ok := cl.byKey[closerKey{ts, args[0]}]
	cl.mu.Unlock()
	if !ok {
		ts.Fatalf("waitclosed: no closer started")
	}
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		st.mu.Lock()
		n, ch := st.n, st.changed
		st.mu.Unlock()
		if n >= want {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			ts.Fatalf("closer accepted %d connections in %v, want %d", n, Timeout, want)
		}
	}
}

// Status returns the command "status N PROGRAM [ARGS...]": PROGRAM runs as exec runs it
// (stdout and stderr are then checked with the usual commands) and must exit with status
// N; then check, if not nil, is given its stderr and N and returns what is wrong with
// them, or "".
func Status(check func(stderr string, code int) string) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) < 2 {
			ts.Fatalf("usage: status N prog [args...]")
		}
		want, err := strconv.Atoi(args[0])
		if err != nil {
			ts.Fatalf("status: %q is not a number", args[0])
		}
		err = ts.Exec(args[1], args[2:]...)
		got := 0
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			got = ee.ExitCode()
		case err != nil:
			ts.Fatalf("status: running %s: %v", args[1], err)
		}
		if got != want {
			ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
		}
		if check != nil {
			if msg := check(ts.ReadFile("stderr"), want); msg != "" {
				ts.Fatalf("%s", msg)
			}
		}
	}
}

func freeport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	ts.Setenv(args[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	ln.Close()
}

func busyport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: busyport VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	ts.Defer(func() { ln.Close() })
	ts.Setenv(args[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

func waitport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitport HOST:PORT")
	}
	deadline := time.Now().Add(Timeout)
	for {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("nothing accepts on %s after %v: %v", args[0], Timeout, err)
		}
		t := time.NewTimer(10 * time.Millisecond) // poll interval, bounded by the deadline
		<-t.C
	}
}

func echoserver(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: echoserver VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	var wg sync.WaitGroup
	ts.Defer(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(Timeout))
				if _, err := io.Copy(c, c); err == nil {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
	ts.Setenv(args[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

func roundtrip(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: [!] roundtrip HOST:PORT N")
	}
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	err = roundTrip(args[0], n)
	switch {
	case err != nil && !neg:
		ts.Fatalf("roundtrip: %v", err)
	case err == nil && neg:
		ts.Fatalf("roundtrip through %s succeeded", args[0])
	case err != nil:
		ts.Logf("roundtrip failed as expected: %v", err)
	}
}

// roundTrip sends n random bytes to addr, half-closes, and checks that the same bytes
// come back before the end.
func roundTrip(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(Timeout))
	data := make([]byte, n)
	_, _ = rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("reading the echo after %d bytes: %w", got, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	want := sha256.Sum256(data)
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("got %d bytes sha256 %x, want %d bytes %x", got, h.Sum(nil), n, want)
	}
	return nil
}

func sigterm(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: sigterm")
	}
	for _, cmd := range ts.BackgroundCmds() {
		if cmd.Process != nil {
			ts.Check(cmd.Process.Signal(syscall.SIGTERM)) // by pid: a program this script started
		}
	}
}
