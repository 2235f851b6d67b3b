package main

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackSignalWhileConnecting: SIGTERM, SIGHUP or SIGINT to a tcppipe whose connect to
// host "." gets no answer (a blackhole on IPv4 and on IPv6 loopback) ends it within a
// second, status 1, with one line that says so, and leaves its -n file as it was.
func TestAttackSignalWhileConnecting(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.1", "::1"} {
		black := testkit.BlackholeAt(t, netip.AddrPortFrom(netip.MustParseAddr(host), 0))
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT} {
			t.Run(host+"/"+sig.String(), func(t *testing.T) {
				t.Parallel()
				hosts := filepath.Join(t.TempDir(), "hosts")
				text := host + " 7\n"
				if err := os.WriteFile(hosts, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				p := start(t, nil, nil, "-n", hosts, "-", ".", strconv.Itoa(int(black.Port())))
				testkit.WaitUntil(t, 10*time.Second, "the connect under way", func() bool { return p.Sockets(t) >= 1 })
				p.Signal(t, sig)
				code, took := p.Exit(t, 5*time.Second)
				if code != 1 || p.Log.String() != "tcppipe: interrupted by signal while connecting\n" || took > time.Second {
					t.Errorf("%v while connecting: exit %d after %v, stderr %q; want 1 within 1s, interrupted while connecting",
						sig, code, took.Round(time.Millisecond), p.Log.String())
				}
				if b, _ := os.ReadFile(hosts); string(b) != text {
					t.Errorf("the -n file after the signal: %q, want %q", b, text)
				}
			})
		}
	}
}

// TestAttackSignalDuringWait: SIGTERM during -w's wait after the accept ends tcppipe at
// once with status 1, and the peer that connected sees a reset, not a clean end that
// would read as an empty transfer.
func TestAttackSignalDuringWait(t *testing.T) {
	t.Parallel()
	p, port := startListening(t, nil, nil, func(port int) []string { return []string{"-w", "30", ":" + strconv.Itoa(port), "-"} })
	c := testkit.Dial(t, "[::1]:"+strconv.Itoa(port))
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitUntil(t, 10*time.Second, "the accept", func() bool { return !listening(t, port) || p.Sockets(t) >= 2 })
	p.Signal(t, syscall.SIGTERM)
	code, took := p.Exit(t, 5*time.Second)
	if code != 1 || took > time.Second {
		t.Errorf("SIGTERM during -w: exit %d after %v, stderr %q; want 1 within 1s", code, took, p.Log.String())
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		var ne net.Error
		t.Errorf("the peer read %d, %v (timeout: %v); want a reset", n, err, errors.As(err, &ne) && ne.Timeout())
	}
}

// TestAttackInsertStreamed: --insert with a file far larger than a transfer needs in
// memory (512 MiB, sparse) streams it: the first bytes reach stdout at once and tcppipe's
// RSS stays small, where reading the whole file first held it all in memory (and
// --insert /dev/zero grew until the kernel's OOM killer ended tcppipe). SIGTERM then
// ends it as a cut transfer.
func TestAttackInsertStreamed(t *testing.T) {
	t.Parallel()
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	p := start(t, devnull, w, "--insert", big, "-", "-")
	w.Close()
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r, make([]byte, 1<<20)); err != nil {
		t.Fatalf("the first MiB of --insert on stdout: %v", err)
	}
	if rss := p.RSS(t); rss > 128<<10 {
		t.Errorf("tcppipe's RSS %d MiB while it sends a 512 MiB --insert, want it streamed (under 128 MiB)", rss>>10)
	}
	p.Signal(t, syscall.SIGTERM)
	if code, _ := p.Exit(t, 5*time.Second); code != 1 {
		t.Errorf("SIGTERM in the middle of --insert: exit %d, want 1", code)
	}
}

// TestAttackSignalWaitingForInsert: --insert names a FIFO that no process writes. A
// blocking open(2) of it held tcppipe where SIGTERM, SIGHUP and SIGINT could not end it.
// The signal must end it at once, status 1, with one line that says what it waited for,
// and no connection made.
func TestAttackSignalWaitingForInsert(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			fifo := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			ln := testkit.Listen(t, "[::1]:0")
			accepted := make(chan struct{}, 1)
			go func() {
				if c, err := ln.Accept(); err == nil {
					accepted <- struct{}{}
					c.Close()
				}
			}()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			p := start(t, nil, nil, "--insert", fifo, "-", "::1", port)
			testkit.WaitUntil(t, 10*time.Second, "tcppipe at its --insert FIFO", func() bool {
				return holdsFile(p.Pid(), fifo) || inOpen(p.Pid())
			})
			p.Signal(t, sig)
			code, took := p.Exit(t, 5*time.Second)
			want := "tcppipe: interrupted by signal while waiting for a writer of the insert file " + fifo + " (a FIFO) after 0 bytes (0 B)\n"
			if code != 1 || p.Log.String() != want || took > time.Second {
				t.Errorf("%v while waiting for the --insert FIFO: exit %d after %v, stderr %q; want 1 within 1s, %q",
					sig, code, took.Round(time.Millisecond), p.Log.String(), want)
			}
			select {
			case <-accepted:
				t.Error("tcppipe connected to its destination without its --insert")
			default:
			}
		})
	}
}

// holdsFile reports whether process pid has path open.
func holdsFile(pid int, path string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if target, _ := os.Readlink(dir + e.Name()); target == path {
			return true
		}
	}
	return false
}

// inOpen reports whether a thread of process pid waits in openat(2).
func inOpen(pid int) bool {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/syscall")
	for _, task := range tasks {
		if b, _ := os.ReadFile(task); strings.HasPrefix(string(b), strconv.Itoa(syscall.SYS_OPENAT)+" ") {
			return true
		}
	}
	return false
}
