package main

import (
	"bufio"
	"fmt"
	"io"
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

	"shd-tcp-tools/internal/testkit"
)

// startPFPipe runs tcp-pf with args after "-s 127.0.0.1:PORT" and its stderr the write end
// of a pipe that holds only 4 KiB (one page, the least Linux allows), and waits until it
// accepts connections. It returns the process and the pipe's read end, which the test
// reads, closes or leaves alone. The process is killed, by its pid, if the test ends with
// it running.
func startPFPipe(t *testing.T, args ...string) (*proc, *os.File) {
	t.Helper()
	for try := 0; ; try++ {
		r, w := testkit.SmallPipe(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))) // tcp-pf rejects port 0
		cmd := exec.Command("tcp-pf", append([]string{"-s", addr}, args...)...)
		cmd.Stderr = w // the process's own fd 2, not a copy through this process
		p := &proc{Proc: testkit.StartCmd(t, cmd), addr: addr}
		w.Close()
		if accepting(p, 10*time.Second) {
			return p, r
		}
		if try >= 3 {
			t.Fatalf("tcp-pf not accepting on %s: exit %v", addr, p.Err())
		}
		r.Close() // exited: another test may have taken the port in between
	}
}

// accepting waits up to d until p accepts a connection, and reports whether it did before
// it exited. The probe connection is relayed and logged like any other.
func accepting(p *proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			return true
		}
		select {
		case <-p.Done():
			return false
		case <-tick.C:
		}
	}
	return false
}

// hostCount returns the count of host in the host file at path, or -1.
func hostCount(t *testing.T, path, host string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(host) + ` (\d+)\r?$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// A log reader that goes away (tcp-pf 2>&1 | head -1) stops the logging, not the service:
// tcp-pf goes on relaying every byte and writes the exact counts on SIGTERM.
func TestLogReaderGone(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(be.Addr()+" 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, r := startPFPipe(t, "-l", path, "-p", "9", "--grace", "0.2")
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || !strings.Contains(line, "listening on ") {
		t.Fatalf("first line %q (%v), want the listening line", line, err)
	}
	r.Close() // as head -1 does
	const conns, size = 200, 10000
	for i := range conns {
		if err := testkit.EchoTrip(p.addr, uint64(i), size, 10*time.Second, false); err != nil {
			t.Fatalf("connection %d after the log reader left: %v", i, err)
		}
	}
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	// Every relayed byte both ways, the start-up probe's none.
	if got, want := hostCount(t, path, be.Addr()), int64(2*conns*size); got != want {
		t.Errorf("host file count %d after SIGTERM, want %d", got, want)
	}
}

// A log reader that stops reading (a full stderr pipe) holds up no connection: 1,000 short
// ones are all served while nobody reads, and once the reader reads again, a line reports
// how many lines were dropped; kept and dropped make up every open and close.
func TestLogReaderStalls(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	p, r := startPFPipe(t, "-d", be.Addr())
	const conns, workers = 1000, 20
	var next, failed atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= conns {
					return
				}
				if err := testkit.EchoTrip(p.addr, uint64(i), 1000, 5*time.Second, false); err != nil {
					failed.Add(1)
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return // one failure per worker is enough to know
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d connections failed while stderr was not read", n)
	}
	// The reader comes back.
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = io.Copy(p.Log, r)
	}()
	p.Log.WaitFor(t, `dropped \d+ log lines: stderr could not take them`, 1, 10*time.Second)
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	<-read
	dropped := p.Log.Dropped()
	// The probe of startPFPipe is one more connection.
	kept := p.Log.Count(` open #`) + p.Log.Count(` close #`)
	if kept+dropped != 2*(conns+1) || dropped == 0 {
		t.Errorf("%d open and close lines kept and %d dropped, want %d in all", kept, dropped, 2*(conns+1))
	}
}
