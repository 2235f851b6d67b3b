package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// proc is a tcp-pf process started by a test.
type proc struct {
	*testkit.Proc        // its stderr in Log
	addr          string // where it listens
}

// startPF runs tcp-pf with args after "-s HOST:PORT" (a free port on host), through the
// shell command prefix when it is not empty ("ulimit -n 64; exec"), and waits for its
// listening line (with -q, which has none, for its socket to listen). The process is
// killed, by its pid, if the test ends with it running.
func startPF(t *testing.T, host, prefix string, args ...string) *proc {
	t.Helper()
	quiet := slices.Contains(args, "-q")
attempts:
	for try := 0; ; try++ {
		ln := testkit.Listen(t, net.JoinHostPort(host, "0"))
		addr := ln.Addr().String()
		ln.Close() // a free port for tcp-pf, which rejects port 0
		argv := append([]string{"tcp-pf", "-s", addr}, args...)
		if prefix != "" {
			argv = append([]string{"sh", "-c", prefix + ` "$@"`, "sh"}, argv...)
		}
		p := &proc{Proc: testkit.Start(t, argv[0], argv[1:]...), addr: addr}
		if quiet {
			_, port, _ := net.SplitHostPort(addr)
			n, _ := strconv.Atoi(port)
			p.WaitListening(t, n)
			return p
		}
		deadline := time.After(10 * time.Second)
		for {
			if p.Log.Count(`listening on `) > 0 {
				return p
			}
			select {
			case <-p.Done():
				if strings.Contains(p.Log.String(), "address already in use") && try < 3 {
					continue attempts // another test took the port in between
				}
				t.Fatalf("tcp-pf exited before listening: %v\n%s", p.Err(), p.Log.String())
			case <-deadline:
				t.Fatalf("tcp-pf not listening after 10s:\n%s", p.Log.String())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// SIGTERM writes the counts of every connection, the open one included, exactly, and keeps
// the file's comments, blank and malformed lines.
func TestSIGTERMWritesCounts(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	text := "# pool\r\n%s %d\r\n\r\nnot a host line\r\n[::1]:%d %d\r\n"
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(text, a.Addr(), 0, b.Port(), 1000000)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPF(t, "127.0.0.1", "", "-l", path, "-p", "9", "--grace", "0.2")
	p.Log.WaitFor(t, `^tcp-pf: warning: .*hosts:4: malformed entry: more than two fields$`, 1, time.Second)
	var moved int64
	for i, n := range []int64{100000, 50000, 70000} {
		c := testkit.Dial(t, p.addr)
		testkit.RoundTrip(t, c, uint64(i), n)
		moved += 2 * n
		if i < 2 {
			c.Close()
		} // the last stays open through the stop
	}
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(text, a.Addr(), moved, b.Port(), 1000000); string(got) != want {
		t.Errorf("host file after SIGTERM:\n%q\nwant:\n%q\nlog:\n%s", got, want, p.Log.String())
	}
	if !strings.Contains(p.Log.String(), "wrote counts to "+path) {
		t.Errorf("no write line:\n%s", p.Log.String())
	}
	if b.Accepts.Load() != 0 {
		t.Errorf("the host with 1000000 bytes got %d connections", b.Accepts.Load())
	}
}

// On SIGTERM, tcp-pf stops accepting at once, lets an open connection go on for --grace
// seconds, then cuts it and exits 0.
func TestSIGTERMWithOpenConnection(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	p := startPF(t, "127.0.0.1", "", "-d", be.Addr(), "--grace", "1.5")
	c := testkit.Dial(t, p.addr)
	testkit.RoundTrip(t, c, 1, 10000)
	start := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.Log.WaitFor(t, `stopping: 1 connection open, letting it finish for 1.5s$`, 1, 5*time.Second)
	if c2, err := net.DialTimeout("tcp", p.addr, 2*time.Second); err == nil {
		c2.Close()
		t.Error("a connection was accepted after SIGTERM")
	}
	testkit.RoundTrip(t, c, 2, 100000) // still relayed during the grace period
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reading until the cut: %v, want a reset", err)
	}
	<-p.Done()
	if d := time.Since(start); d < 1500*time.Millisecond || d > 8*time.Second {
		t.Errorf("exited %v after SIGTERM, want a little over the 1.5s grace", d)
	}
	if p.Err() != nil {
		t.Errorf("exit: %v", p.Err())
	}
	p.Log.WaitFor(t, `cutting 1 connection$`, 1, time.Second)
	p.Log.WaitFor(t, `close #1 .* up=110000 .* down=110000 .*end="cut: stopped"$`, 1, time.Second)
}

// On SIGTERM with nothing open, tcp-pf still says that it stops, in a line of its own,
// before it exits 0: a log that just ends reads as a crash.
func TestSIGTERMWithNothingOpen(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	p := startPF(t, "::1", "", "-d", be.Addr())
	c := testkit.Dial(t, p.addr)
	testkit.RoundTrip(t, c, 1, 10000)
	c.Close()
	p.Log.WaitFor(t, `close #1 `, 1, 5*time.Second)
	p.Stop(t, syscall.SIGTERM, 5*time.Second)
	p.Log.WaitFor(t, `Z stopping: no connections open$`, 1, time.Second)
}

// Out of descriptors, tcp-pf backs off accepting and logs it a bounded number of times,
// then serves again once connections end. It warns at start that the limit is low.
func TestOutOfDescriptors(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	// sh's ulimit sets the soft and the hard limit, so Go cannot raise it at start.
	p := startPF(t, "127.0.0.1", "ulimit -n 40; exec", "-d", be.Addr())
	p.Log.WaitFor(t, `warning: open file limit \(ulimit -n\) is 40;`, 1, time.Second)

	// Hold more connections than 40 descriptors allow (each relay needs 2 to 6), and keep
	// adding some for 1.5 s, so that the shortage lasts.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hold := func() {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err) // the kernel completes the handshake whether or not tcp-pf accepts
		}
		held = append(held, c)
	}
	for range 30 {
		hold()
	}
	p.Log.WaitFor(t, `out of descriptors or memory \(.*too many open files\): pausing accept for 5ms, doubling up to 1s$`, 1, 10*time.Second)
	overloaded := time.Now()
	pace := time.NewTicker(20 * time.Millisecond) // the load's pace, not a synchronisation
	for time.Since(overloaded) < 1500*time.Millisecond {
		hold()
		<-pace.C
	}
	pace.Stop()
	p.Log.WaitFor(t, `still out of descriptors or memory \(.*too many open files\): \d+ failures since the last report`, 1, 5*time.Second)
	// A connection relayed before the shortage still moves every byte, in order.
	testkit.RoundTrip(t, held[0], 5, 1<<20)
	p.Log.WaitFor(t, `open #1 `, 1, 5*time.Second) // the first held connection was relayed
	for _, c := range held {
		c.Close()
	}
	// Served again: a round trip through a fresh connection, retried while the backlog of
	// closed connections drains.
	var c *net.TCPConn
	testkit.WaitUntil(t, 15*time.Second, "a connection served after the overload", func() bool {
		if c != nil {
			c.Close()
		}
		conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			return false
		}
		c = conn.(*net.TCPConn)
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return false
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return err == nil && string(buf) == "ping"
	})
	_ = c.SetDeadline(time.Time{})
	testkit.RoundTrip(t, c, 3, 1<<20)
	c.Close()
	p.Log.WaitFor(t, `serving again after \d+ failures`, 1, time.Second)
	secs := time.Since(overloaded).Seconds()
	if n := p.Log.Count(`out of descriptors or memory`); n > int(secs)+3 {
		t.Errorf("%d back-off lines in %.1fs of overload, want about one a second:\n%s", n, secs, p.Log.String())
	}
	p.Stop(t, syscall.SIGINT, 10*time.Second)
}

// The command end to end over IPv6 loopback: allow list, --insert and --lazy.
func TestIPv6EndToEnd(t *testing.T) {
	t.Parallel()
	got := make(chan testkit.Digest, 1)
	be := testkit.StartBackend(t, "[::1]:0", func(c *net.TCPConn) {
		d, _ := testkit.Receive(c)
		got <- d
		_, _ = testkit.Send(c, 8, 3<<20) // a reply after the client's half-close
	})
	insert := filepath.Join(t.TempDir(), "insert")
	if err := os.WriteFile(insert, []byte("HELLO\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPF(t, "::1", "", "-d", be.Addr(), "-a", "::1/128", "-a", "192.0.2.0/24", "--insert", insert, "--lazy")
	if !regexp.MustCompile(`listening on \[::1\]:\d+, forwarding to \[::1\]:` + strconv.Itoa(be.Port())).MatchString(p.Log.String()) {
		t.Errorf("listening line:\n%s", p.Log.String())
	}
	c := testkit.Dial(t, p.addr)
	sent := testkit.NewDigester()
	_, _ = sent.Write([]byte("HELLO\n"))
	d, err := testkit.Send(c, 7, 5<<20)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = testkit.Send(sent, 7, 5<<20)
	_ = c.CloseWrite()
	reply, err := testkit.Receive(c)
	if err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != sent.Digest() {
		t.Errorf("backend got %v, want the insert then %v", g, d)
	}
	if want := testkit.Expected(8, 3<<20); reply != want {
		t.Errorf("reply %v, want %v", reply, want)
	}
	p.Log.WaitFor(t, `close #1 \[::1\]:\d+ -> \[::1\]:\d+ up=5242886 \(5\.00 MiB, .*/s\) down=3145728 \(3\.00 MiB, .*/s\) time=\S+s end="client closed"$`, 1, 5*time.Second)
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
}

// INADDR_DEFAULT is the listener's address when -s names none, and the local address of the
// connections to the destination.
func TestINADDRDefault(t *testing.T) {
	t.Parallel()
	from := make(chan string, 1)
	be := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
		from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		testkit.Echo(c)
	})
	ln := testkit.Listen(t, "127.0.0.2:0")
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command("tcp-pf", "-s", port, "-d", be.Addr())
	cmd.Env = append(os.Environ(), "INADDR_DEFAULT=127.0.0.2")
	log := testkit.NewLogBuf()
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-done; err != nil {
			t.Errorf("tcp-pf: %v\n%s", err, log.String())
		}
	}()
	log.WaitFor(t, `listening on 127\.0\.0\.2:`+port+`, `, 1, 10*time.Second)
	c := testkit.Dial(t, "127.0.0.2:"+port)
	testkit.RoundTrip(t, c, 1, 1000)
	if ip := <-from; ip != "127.0.0.2" {
		t.Errorf("the destination saw the connection come from %s, want 127.0.0.2", ip)
	}
}

// Both connections of a relay have TCP keepalive on: the kernel runs the keepalive timer
// (timer 2 in /proc/net/tcp) on each. The accepted socket has it from the listener at
// once; the dialled one gets it once it has lived a second (short connections are spared).
func TestKeepAliveBothSides(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	p := startPF(t, "127.0.0.1", "", "-d", be.Addr())
	c := testkit.Dial(t, p.addr)
	testkit.RoundTrip(t, c, 1, 100)
	_, pfPort, _ := net.SplitHostPort(p.addr)
	clientPort := c.LocalAddr().(*net.TCPAddr).Port
	hexPort := func(p int) string { return fmt.Sprintf(":%04X", p) }
	pp, _ := strconv.Atoi(pfPort)
	timers := func() (accepted, dialled string) {
		table, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(table), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 6 || f[3] != "01" { // established
				continue
			}
			local, remote, timer := f[1], f[2], strings.SplitN(f[5], ":", 2)[0]
			switch {
			case strings.HasSuffix(local, hexPort(pp)) && strings.HasSuffix(remote, hexPort(clientPort)):
				accepted = timer
			case strings.HasSuffix(remote, hexPort(be.Port())) && !strings.HasSuffix(local, hexPort(clientPort)):
				dialled = timer
			}
		}
		return accepted, dialled
	}
	if accepted, _ := timers(); accepted != "02" {
		t.Errorf("keepalive timer of the accepted socket: %q, want 02 (keepalive) at once", accepted)
	}
	testkit.WaitUntil(t, 5*time.Second, "keepalive on the dialled socket", func() bool {
		_, dialled := timers()
		return dialled == "02"
	})
}

// The listening line names the port of -p only when there is one: with -l alone every
// entry names its own, and "(port 0)" would name a port that is never used.
func TestListeningLineWithoutPort(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(file, []byte("127.0.0.1:9 0\n[::1]:9 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPF(t, "127.0.0.1", "", "-l", file)
	line := p.Log.Find(`listening on .*`)[0]
	if strings.Contains(line, "port 0") || !strings.HasSuffix(line, "least used host of "+file+" (each entry names its port)") {
		t.Errorf("listening line %q, want it to end %q", line, "least used host of "+file+" (each entry names its port)")
	}
	withPort := startPF(t, "127.0.0.1", "", "-l", file, "-p", "80")
	if got := withPort.Log.Count(`least used host of .* \(port 80\)$`); got != 1 {
		t.Errorf("with -p 80: %q", withPort.Log.String())
	}
}
