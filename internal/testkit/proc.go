package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/pipe/pipetest"
)

// Proc is a process a test started: a built tool, or a program such as HAProxy. What it
// writes to Log (its stderr, unless the test gave the command another) can be waited on.
type Proc struct {
	Cmd  *exec.Cmd
	Log  *LogBuf
	done chan struct{} // closed when it has exited
	err  error         // its exit, valid after done
}

// Start runs path with args, its stderr going to Log.
func Start(t testing.TB, path string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, exec.Command(path, args...))
}

// StartProgram runs path with args, its stdout and stderr both going to Log: for daemons
// that log to either (HAProxy, nginx).
func StartProgram(t testing.TB, path string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	log := NewLogBuf()
	cmd.Stdout, cmd.Stderr = log, log
	return startCmd(t, cmd, log)
}

// StartCmd starts cmd as the test set it up; a nil Stderr becomes Log. A process still
// running when the test ends is killed, by its pid, and its stderr's tail is logged when
// the test failed.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	return startCmd(t, cmd, NewLogBuf())
}

func startCmd(t testing.TB, cmd *exec.Cmd, log *LogBuf) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Log: log, done: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = log
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill() // by pid: a process this test started
			<-p.done
		}
		if t.Failed() && log.String() != "" {
			t.Logf("%s's output (the last 40 lines):\n%s", filepath.Base(cmd.Path), Tail(log.String(), 40))
		}
	})
	return p
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process exited (nil for status 0); valid once Done is closed.
func (p *Proc) Err() error { return p.err }

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
	if err := p.Cmd.Process.Signal(sig); err != nil {
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
		t.Fatalf("pid %d still running after %v; its output ends:\n%s", p.Pid(), d, Tail(p.Log.String(), 20))
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
		t.Fatalf("pid %d exited with status %d after %v, want 0; its output ends:\n%s", p.Pid(), code, sig, Tail(p.Log.String(), 20))
	}
	return took
}

// WaitLog waits until n lines of Log match re, or fails the test after d.
func (p *Proc) WaitLog(t testing.TB, re string, n int, d time.Duration) {
	t.Helper()
	p.Log.WaitFor(t, re, n, d)
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

// RSS returns the process's resident set size in KiB (VmRSS).
func (p *Proc) RSS(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/status")
	if err != nil {
		t.Fatalf("reading the resident size: %v", err)
	}
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", p.Pid())
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// CPU returns the user and system CPU time the process has used (/proc/PID/stat).
func (p *Proc) CPU(t testing.TB) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/stat")
	if err != nil {
		t.Fatalf("reading the CPU time: %v", err)
	}
	// The fields after the command's name, which is in parentheses and may hold blanks.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", p.Pid(), b)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
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

// WaitListening waits until a socket listens on port, failing the test after 10 s or when
// the process exits first. It asks the kernel (sock_diag) rather than connecting, so the
// process sees no connection of ours.
func (p *Proc) WaitListening(t testing.TB, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		_, ok, err := pipetest.ListenQueue(port)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("the program meant to listen on port %d exited (%v):\n%s", port, p.err, p.Log)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on port %d after 10s:\n%s", port, p.Log)
		}
	}
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// CPUTime is this process's user and system CPU time so far (getrusage), for benchmarks
// that report CPU per byte.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
