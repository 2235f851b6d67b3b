package pipe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

const transferSize = 4 << 20

// TestTransfer moves random data through the engine in each of its four shapes (it listens
// or connects, it sends from stdin or receives to stdout) over every loopback host, and
// checks length and SHA-256 at the far end.
func TestTransfer(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(transferSize)
	in := testkit.WriteFile(t, "in", data)
	for _, host := range loopbackHosts(t) {
		t.Run(host, func(t *testing.T) {
			t.Run("listen-receive", func(t *testing.T) { // tcppipe :PORT - > out
				t.Parallel()
				out, outPath := createFile(t)
				e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out})
				sendToEngine(t, e, host, data)
				checkFile(t, outPath, data)
			})
			t.Run("connect-send", func(t *testing.T) { // tcppipe - HOST PORT < in
				t.Parallel()
				ln := listen(t, host)
				e := start(t, Config{Source: stdio, Destination: connectEnd(host, port(ln)), Stdin: testkit.Open(t, in)})
				got, err := readAll(accept(t, ln))
				if err != nil {
					t.Fatal(err)
				}
				if err := e.wait(t); err != nil {
					t.Fatal(err)
				}
				checkBytes(t, "received", got, data)
			})
			t.Run("listen-send", func(t *testing.T) { // tcppipe - :PORT < in
				t.Parallel()
				e := start(t, Config{Source: stdio, Destination: listenEnd(), Stdin: testkit.Open(t, in)})
				c, err := net.Dial("tcp", dialAddr(host, e.addr(t)))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				got, err := readAll(c)
				if err != nil {
					t.Fatal(err)
				}
				if err := e.wait(t); err != nil {
					t.Fatal(err)
				}
				checkBytes(t, "received", got, data)
			})
			t.Run("connect-receive", func(t *testing.T) { // tcppipe HOST PORT - > out
				t.Parallel()
				ln := listen(t, host)
				out, outPath := createFile(t)
				e := start(t, Config{Source: connectEnd(host, port(ln)), Destination: stdio, Stdout: out})
				if err := sendAll(accept(t, ln), data); err != nil {
					t.Fatal(err)
				}
				if err := e.wait(t); err != nil {
					t.Fatal(err)
				}
				checkFile(t, outPath, data)
			})
		})
	}
}

// TestStdioToStdio is "- -": a (limited, metered) copy of stdin to stdout.
func TestStdioToStdio(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(3<<20 + 12345)
	in := testkit.WriteFile(t, "in", data)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{}},
		{"limited-metered", Config{Rate: 10 << 30, Progress: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, outPath := createFile(t)
			cfg := tc.cfg
			cfg.Source, cfg.Destination, cfg.Stdin, cfg.Stdout = stdio, stdio, testkit.Open(t, in), out
			e := start(t, cfg)
			if err := e.wait(t); err != nil {
				t.Fatal(err)
			}
			checkFile(t, outPath, data)
			if cfg.Progress && !strings.Contains(e.stderr.String(), "tcppipe: 3158073 bytes (3.01 MiB) in ") {
				t.Errorf("stderr %q: want the summary line", e.stderr)
			}
		})
	}
}

// TestInsertFirst checks that --insert's content reaches the destination before any byte
// of the source, to a socket and to stdout.
func TestInsertFirst(t *testing.T) {
	t.Parallel()
	head := []byte("HEADER: the --insert file comes first\n")
	data := testkit.RandomData(1 << 20)
	in := testkit.WriteFile(t, "in", data)
	insert := testkit.WriteFile(t, "insert", head)
	empty := testkit.WriteFile(t, "empty", nil)
	want := slices.Concat(head, data)

	t.Run("to-socket", func(t *testing.T) {
		t.Parallel()
		ln := listen(t, "127.0.0.1")
		e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)), Stdin: testkit.Open(t, in), InsertFile: insert})
		got, err := readAll(accept(t, ln))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
		checkBytes(t, "received", got, want)
	})
	t.Run("to-stdout", func(t *testing.T) {
		t.Parallel()
		out, outPath := createFile(t)
		e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out, InsertFile: insert})
		sendToEngine(t, e, "127.0.0.1", data)
		checkFile(t, outPath, want)
	})
	t.Run("empty-insert", func(t *testing.T) {
		t.Parallel()
		out, outPath := createFile(t)
		e := start(t, Config{Source: stdio, Destination: stdio, Stdin: testkit.Open(t, in), Stdout: out, InsertFile: empty})
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
		checkFile(t, outPath, data)
	})
}

// TestWait checks -w's lower bound: after the engine accepts, no byte moves before the wait
// has elapsed. The clock starts before the test connects, which is before the accept.
func TestWait(t *testing.T) {
	t.Parallel()
	const wait = 300 * time.Millisecond
	data := []byte("sent right after connecting")

	t.Run("source", func(t *testing.T) { // tcppipe -w 0.3 :PORT - | ...
		t.Parallel()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: w, Wait: wait})
		addr := dialAddr("127.0.0.1", e.addr(t))
		t0 := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := sendAll(c.(*net.TCPConn), data); err != nil {
			t.Fatal(err)
		}
		r.SetReadDeadline(time.Now().Add(testTimeout))
		first := make([]byte, 1)
		if _, err := io.ReadFull(r, first); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d < wait {
			t.Errorf("first byte on stdout %v after connecting; want at least %v", d, wait)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("destination", func(t *testing.T) { // tcppipe -w 0.3 - :PORT < in
		t.Parallel()
		e := start(t, Config{Source: stdio, Destination: listenEnd(), Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), Wait: wait})
		addr := dialAddr("127.0.0.1", e.addr(t))
		t0 := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(testTimeout))
		first := make([]byte, 1)
		if _, err := io.ReadFull(c, first); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d < wait {
			t.Errorf("first byte on the socket %v after connecting; want at least %v", d, wait)
		}
		rest, err := readAll(c)
		if err != nil || !bytes.Equal(append(first, rest...), data) {
			t.Errorf("received %q, %v; want %q", append(first, rest...), err, data)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
	})
}

// TestProgressReport checks that -p prints reports and a summary with the total.
func TestProgressReport(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(1 << 20)
	ln := listen(t, "127.0.0.1")
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), Progress: true, Rate: 512 << 10})
	got, err := readAll(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "received", got, data)
	lines := strings.Split(strings.TrimSuffix(e.stderr.String(), "\n"), "\n")
	// At 512 KiB/s, 1 MiB takes about 2 s: at least one report, then the summary, last.
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "tcppipe: ") || !strings.Contains(lines[0], " now, ") ||
		!strings.HasPrefix(lines[len(lines)-1], "tcppipe: 1048576 bytes (1.00 MiB) in ") {
		t.Errorf("stderr %q: want reports, then the summary", e.stderr)
	}
}

// TestCutShortByReset checks that a destination that resets ends the transfer with a
// *CutShortError that counts the bytes that went through, and that those bytes, and no
// others, are added to the -b entry.
func TestCutShortByReset(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(32 << 20)
	bind := testkit.WriteFile(t, "bind", []byte("127.0.0.1 7\n"))
	ln := listen(t, "127.0.0.1")
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), BindFile: bind})
	c := accept(t, ln)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	reset(c)
	err := e.wait(t)
	var cut *CutShortError
	if !errors.As(err, &cut) {
		t.Fatalf("Run = %v; want a *CutShortError", err)
	}
	if cut.Bytes < 256<<10 || cut.Bytes >= int64(len(data)) || !isReset(err) {
		t.Errorf("Run = %v (%d bytes); want a reset after 256 KiB to %d bytes", err, cut.Bytes, len(data))
	}
	if msg, want := err.Error(), fmt.Sprintf("DESTINATION %s reset by peer after %d bytes (", c.LocalAddr(), cut.Bytes); !strings.HasPrefix(msg, want) || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line starting %q", msg, want)
	}
	if got := hostCount(t, bind, "127.0.0.1"); got != 7+uint64(cut.Bytes) {
		t.Errorf("bind file count %d; want 7 + %d", got, cut.Bytes)
	}
}

// TestSourceReset checks that a source that resets is a cut-short transfer too.
func TestSourceReset(t *testing.T) {
	t.Parallel()
	out, _ := createFile(t)
	e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out})
	c, err := net.Dial("tcp", dialAddr("127.0.0.1", e.addr(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(testkit.RandomData(64 << 10)); err != nil {
		t.Fatal(err)
	}
	reset(c.(*net.TCPConn))
	err = e.wait(t)
	var cut *CutShortError
	if !errors.As(err, &cut) || !isReset(err) || cut.Bytes > 64<<10 {
		t.Fatalf("Run = %v; want a *CutShortError for a reset, at most 64 KiB through", err)
	}
}

// TestSignalWhileWaiting checks that a signal while waiting for a connection ends the run
// with a plain error (no transfer was cut: none began).
func TestSignalWhileWaiting(t *testing.T) {
	t.Parallel()
	out, _ := createFile(t)
	e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out})
	e.addr(t)
	e.cancel()
	err := e.wait(t)
	var cut *CutShortError
	if err == nil || errors.As(err, &cut) || err.Error() != "interrupted by signal while waiting for a connection" {
		t.Fatalf("Run = %v; want \"interrupted by signal while waiting for a connection\"", err)
	}
}

// TestSignalDuringWait checks that a signal during -w's pause ends the run at once.
func TestSignalDuringWait(t *testing.T) {
	t.Parallel()
	out, _ := createFile(t)
	e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out, Wait: time.Hour})
	a := e.addr(t)
	c, err := net.Dial("tcp", dialAddr("127.0.0.1", a))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The accept queue empties when the engine accepts; it then pauses for an hour.
	waitFor(t, testTimeout, "the engine to accept", func() bool {
		n, ok := acceptQueue(t, a.Port)
		return ok && n == 0
	})
	e.cancel()
	if err := e.wait(t); err == nil || err.Error() != "interrupted by signal" {
		t.Fatalf("Run = %v; want \"interrupted by signal\"", err)
	}
}

// TestGoroutinesReturn checks that a finished transfer leaves no goroutine behind.
func TestGoroutinesReturn(t *testing.T) {
	// Not parallel: the count is the whole process's. Sequential tests run before the
	// parallel ones, so only this test's goroutines come and go.
	before := runtimeGoroutines()
	data := testkit.RandomData(1 << 20)
	ln := listen(t, "127.0.0.1")
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), Progress: true, Rate: 1 << 30, Interval: time.Millisecond})
	got, err := readAll(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "received", got, data)
	waitFor(t, 10*time.Second, "goroutines to return to the baseline", func() bool { return runtimeGoroutines() <= before })
}

// TestProgressSlowPipe checks -p's "a line at least once a second while data flows" for a
// stdin pipe that trickles: each report must come while the pipe is still open, not once
// a whole chunk (a megabyte) has gone through.
func TestProgressSlowPipe(t *testing.T) {
	t.Parallel()
	r, w := stdinPipe(t)
	defer r.Close()
	defer w.Close()
	ln := listen(t, "127.0.0.1")
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)), Stdin: r, Progress: true})
	c := accept(t, ln)
	received := make(chan []byte, 1)
	go func() {
		b, _ := readAll(c)
		received <- b
	}()
	for _, step := range []struct {
		data   []byte
		report string
	}{
		{testkit.RandomData(1000), "tcppipe: 1000 B, "},
		{testkit.RandomData(2000), "tcppipe: 2.93 KiB, "},
	} {
		if _, err := w.Write(step.data); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "a report of "+step.report, func() bool { return strings.Contains(e.stderr.String(), step.report) })
	}
	w.Close()
	if err := e.wait(t); err != nil {
		t.Fatal(err)
	}
	if got := <-received; len(got) != 3000 {
		t.Errorf("received %d bytes; want 3000", len(got))
	}
	if s := e.stderr.String(); !strings.Contains(s, "tcppipe: 3000 bytes (2.93 KiB) in ") {
		t.Errorf("stderr %q: want the summary", s)
	}
}

// TestSignalCountsEveryByte: a signal while a slow stdin pipe is mid-chunk reports, and
// adds to the host file, every byte that went through, not only whole chunks.
func TestSignalCountsEveryByte(t *testing.T) {
	t.Parallel()
	r, w := stdinPipe(t)
	defer r.Close()
	defer w.Close() // ends the engine's read of the pipe, which a signal cannot wake
	ln := listen(t, "127.0.0.1")
	hosts := testkit.WriteFile(t, "hosts", []byte("127.0.0.1 0\n"))
	e := start(t, Config{Source: stdio, Destination: connectEnd(".", port(ln)), Stdin: r, NetworkFile: hosts})
	c := accept(t, ln)
	data := testkit.RandomData(100_000)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	e.cancel() // SIGTERM
	err := e.wait(t)
	var cut *CutShortError
	if !errors.As(err, &cut) || cut.Bytes != int64(len(data)) {
		t.Fatalf("Run = %v; want a *CutShortError counting all %d bytes", err, len(data))
	}
	if n := hostCount(t, hosts, "127.0.0.1"); n != uint64(len(data)) {
		t.Errorf("host file count %d; want %d", n, len(data))
	}
}

// TestProgressSlowReceiver checks -p's "a line at least once a second while data flows"
// for a file sent to a receiver slower than one chunk a second: reports follow the file's
// position between chunks.
func TestProgressSlowReceiver(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(32 << 20)
	ln := listen(t, "127.0.0.1")
	// A small receive buffer, inherited by the accepted connection, keeps what is in flight
	// well under one chunk while the test does not read.
	if err := setReadBuffer(ln, 64<<10); err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), Progress: true})
	c := accept(t, ln)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(c, first); err != nil {
		t.Fatal(err)
	}
	// The receiver stalls; at least the megabyte it took must be reported meanwhile.
	waitFor(t, 10*time.Second, "a report while the receiver stalls", func() bool {
		return strings.Contains(e.stderr.String(), " MiB, ")
	})
	if !e.running() {
		t.Fatal("the transfer ended while the receiver was not reading")
	}
	rest, err := readAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "received", append(first, rest...), data)
	if s := e.stderr.String(); !strings.Contains(s, "tcppipe: 33554432 bytes (32.00 MiB) in ") {
		t.Errorf("stderr %q: want the summary", s)
	}
}
