package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackSecondSignal: an operator who presses Ctrl-C twice, or a supervisor that
// sends SIGTERM again, during tcp-pf's --grace, while an upload is under way on IPv4 and
// another on IPv6. The second signal must end the grace at once, not kill the process:
// both uploads are cut with a reset on both sides (a kill has the kernel send FINs, and a
// cut upload looks complete), the bytes moved are written to the host file (a kill writes
// none), and tcp-pf exits 0 within 5 s. Then SIGINT, then SIGTERM.
func TestAttackSecondSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			ends4, ends6 := make(chan testkit.ReadEnd, 1), make(chan testkit.ReadEnd, 1)
			var got4, got6 atomic.Int64
			a := testkit.StartBackend(t, "127.0.0.1:0", countingSink(&got4, ends4))
			b := testkit.StartBackend(t, "[::1]:0", countingSink(&got6, ends6))
			path := filepath.Join(t.TempDir(), "hosts")
			text := "%s %d\n[::1]:%d %d\n"
			if err := os.WriteFile(path, fmt.Appendf(nil, text, a.Addr(), 0, b.Port(), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			p := startPF(t, "127.0.0.1", "", "-l", path, "-i", "3600", "--grace", "60")
			const sent = 200000
			c4 := testkit.Dial(t, p.addr) // to a (0 bytes)
			if _, err := c4.Write(make([]byte, sent)); err != nil {
				t.Fatal(err)
			}
			p.Log.WaitFor(t, `open #1 `, 1, 5*time.Second)
			c6 := testkit.Dial(t, p.addr) // to b: a has the open connection
			if _, err := c6.Write(make([]byte, sent)); err != nil {
				t.Fatal(err)
			}
			p.Log.WaitFor(t, `open #2 .* -> \[::1\]:`, 1, 5*time.Second)
			testkit.WaitUntil(t, 5*time.Second, "both uploads relayed so far", func() bool {
				return got4.Load() == sent && got6.Load() == sent
			})

			p.Signal(t, sig)
			p.Log.WaitFor(t, `stopping: 2 connections open, letting them finish for 1m0s$`, 1, 5*time.Second)
			start := time.Now()
			p.Signal(t, sig)
			select {
			case <-p.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("tcp-pf still running 5s after a second %v in its grace period", sig)
			}
			t.Logf("exited %v after the second %v", time.Since(start).Round(time.Millisecond), sig)
			var ee *exec.ExitError
			if errors.As(p.Err(), &ee) {
				t.Errorf("exit after a second %v: %v (want status 0, the stop carried out)", sig, p.Err())
			}
			testkit.WantReset(t, c4, ends4, sent, 5*time.Second)
			testkit.WantReset(t, c6, ends6, sent, 5*time.Second)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(text, a.Addr(), sent, b.Port(), 1+sent); string(got) != want {
				t.Errorf("host file after the second %v:\n%s\nwant:\n%s", sig, got, want)
			}
		})
	}
}

// countingSink is testkit.Sink that also keeps, in got, the bytes read so far.
func countingSink(got *atomic.Int64, ends chan<- testkit.ReadEnd) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		buf := make([]byte, 32<<10)
		var err error
		for err == nil {
			var n int
			n, err = c.Read(buf)
			got.Add(int64(n))
		}
		if errors.Is(err, io.EOF) {
			err = io.EOF
		}
		ends <- testkit.ReadEnd{N: got.Load(), Err: err}
	}
}

// TestAttackSIGHUPStorm: SIGHUPs one after another (at most 5,000) while 8 clients at
// once make 10 echo trips of 20,000 bytes each through tcp-pf -l -i 0.05, to a host on
// IPv4 and one on IPv6: every reread keeps the counts not yet written, so no trip fails,
// and the host file holds exactly the bytes moved after SIGTERM.
func TestAttackSIGHUPStorm(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, fmt.Appendf(nil, "# storm\n%s 0\n[::1]:%d 0\n", a.Addr(), b.Port()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPF(t, "127.0.0.1", "", "-l", path, "-i", "0.05", "--grace", "0")
	done, stormed := make(chan struct{}), make(chan int, 1)
	go func() {
		for i := range 5000 {
			select {
			case <-done:
				stormed <- i
				return
			default:
			}
			if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
				stormed <- i
				return
			}
		}
		stormed <- 5000
	}()
	const workers, trips, size = 8, 10, 20000
	var wg sync.WaitGroup
	for w := range uint64(workers) {
		wg.Go(func() {
			for i := range uint64(trips) {
				if err := testkit.EchoTrip(p.addr, 100*w+i, size, 20*time.Second, false); err != nil {
					t.Errorf("worker %d, trip %d, during the SIGHUP storm: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	t.Logf("%d SIGHUPs during the trips", <-stormed)
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	if got, want := countsIn(t, path), int64(2*workers*trips*size); got != want {
		t.Errorf("host file counts %d after the storm, want %d:\n%s", got, want, testkit.Tail(p.Log.String(), 20))
	}
}
