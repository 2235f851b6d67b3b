package tunneltest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/forward/fwdtest"
)

// Build compiles listentwo and connecttwo into a temporary directory of the test and
// returns the path of each, by name.
func Build(t testing.TB) map[string]string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building the tools needs the go command: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator),
		"shd-tcp-tools/cmd/listentwo", "shd-tcp-tools/cmd/connecttwo")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return map[string]string{
		"listentwo":  filepath.Join(dir, "listentwo"),
		"connecttwo": filepath.Join(dir, "connecttwo"),
	}
}

// Proc is a program a test started, its stderr collected.
type Proc struct {
	Log  *fwdtest.LogBuf
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // its exit, valid after done
}

// Start runs path with args; the process is killed, by its pid, if it is still running
// when the test ends.
func Start(t testing.TB, path string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Log: fwdtest.NewLogBuf(), cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Stderr = p.Log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill() // by pid: a process this test started
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr (the last 40 lines):\n%s", filepath.Base(path), Tail(p.Log.String(), 40))
		}
	})
	return p
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling pid %d: %v", p.Pid(), err)
	}
}

// Exit waits up to d for the process to exit and returns its exit status and how long the
// wait took; it fails the test if the process is still running after d.
func (p *Proc) Exit(t testing.TB, d time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		t.Fatalf("pid %d still running after %v; stderr:\n%s", p.Pid(), d, p.Log.String())
	}
	took := time.Since(start)
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0, took
	case errors.As(p.err, &ee):
		return ee.ExitCode(), took
	default:
		t.Fatalf("waiting for pid %d: %v", p.Pid(), p.err)
		return -1, took
	}
}

// Stop sends sig and expects the process to exit with status 0 within d; it returns how
// long the exit took.
func (p *Proc) Stop(t testing.TB, sig syscall.Signal, d time.Duration) time.Duration {
	t.Helper()
	p.Signal(t, sig)
	code, took := p.Exit(t, d)
	if code != 0 {
		t.Fatalf("pid %d exited with status %d after %v, want 0; stderr:\n%s", p.Pid(), code, sig, p.Log.String())
	}
	return took
}

// FDs returns how many file descriptors the process has open.
func (p *Proc) FDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid()) + "/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	return len(ents)
}

// Sockets returns how many sockets the process has open.
func (p *Proc) Sockets(t testing.TB) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(p.Pid()) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("counting sockets: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// Flood holds connections to an address that say nothing (or a few bytes, then nothing):
// each of its workers connects and connects again as soon as the peer closes or resets the
// connection. It is what a stranger does to lock a port: bounded by a number of workers, a
// total number of connects, and the context.
type Flood struct {
	// Held is how many flood connections are open now; Dials counts connects made.
	Held, Dials atomic.Int64
	// MaxHeld is the most connections that were open at once.
	MaxHeld atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// StartFlood starts workers connections from local (an address such as 127.0.0.2, or ""
// for any) to addr, reopened as they are closed, until maxDials connects were made or the
// test calls Stop (or ends). Each connection sends send (if any) once, then nothing more.
func StartFlood(t testing.TB, local, addr string, workers int, maxDials int64, send []byte) *Flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Flood{cancel: cancel}
	d := net.Dialer{Timeout: Timeout}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	for i := 0; i < workers; i++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for ctx.Err() == nil && f.Dials.Add(1) <= maxDials {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					continue // refused or reset before connect returned: try again
				}
				n := f.Held.Add(1)
				for m := f.MaxHeld.Load(); n > m && !f.MaxHeld.CompareAndSwap(m, n); m = f.MaxHeld.Load() {
				}
				stop := context.AfterFunc(ctx, func() { c.Close() })
				if len(send) > 0 {
					_, _ = c.Write(send)
				}
				var b [512]byte
				for {
					// Whatever the peer sends is read and dropped; nothing is ever sent.
					if _, err := c.Read(b[:]); err != nil {
						break
					}
				}
				stop()
				c.Close()
				f.Held.Add(-1)
			}
		}()
	}
	t.Cleanup(f.Stop)
	return f
}

// Stop closes every flood connection and waits for the workers.
func (f *Flood) Stop() {
	f.cancel()
	f.wg.Wait()
}

// WaitHeld waits until at least n flood connections are open at once, or fails the test.
func (f *Flood) WaitHeld(t testing.TB, n int64) {
	t.Helper()
	fwdtest.WaitUntil(t, Timeout, "flood connections held", func() bool { return f.Held.Load() >= n })
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// WaitLog waits until n lines of p's stderr match re, or fails the test after d showing
// the log's tail.
func (p *Proc) WaitLog(t testing.TB, re string, n int, d time.Duration) {
	t.Helper()
	rx := regexp.MustCompile("(?m)" + re)
	deadline := time.Now().Add(d)
	for len(rx.FindAllStringIndex(p.Log.String(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: no %d lines matching %q within %v; its stderr ends:\n%s", p.Pid(), n, re, d, Tail(p.Log.String(), 20))
		}
		tick := time.NewTimer(5 * time.Millisecond) // poll interval, bounded by the deadline
		<-tick.C
	}
}
