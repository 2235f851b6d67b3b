package pipe

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// readSlowly reads c to EOF in small reads, the way a peer busy with other work does,
// and returns what came and the error that ended it (nil for a clean EOF).
func readSlowly(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(testTimeout))
	var got []byte
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

// TestAcknowledgedClose: a peer that has sent tcppipe something it never reads (a server's
// banner, a client's greeting) still gets every byte, and tcppipe returns nil only then.
// Closing a socket with unread input makes Linux reset it and drop what it still queues.
func TestAcknowledgedClose(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(20 << 20)
	in := testkit.WriteFile(t, "in", data)
	hosts := []string{"127.0.0.1"}
	if hasIPv6() {
		hosts = append(hosts, "::1")
	}
	for _, host := range hosts {
		t.Run(host+"/connect", func(t *testing.T) { // tcppipe - HOST PORT < in, to a server with a banner
			t.Parallel()
			ln := listen(t, host)
			e := start(t, Config{Source: stdio, Destination: connectEnd(host, port(ln)), Stdin: testkit.Open(t, in)})
			c := accept(t, ln)
			if _, err := c.Write([]byte("220 ready\r\n")); err != nil { // 11 bytes, never read
				t.Fatal(err)
			}
			got, err := readSlowly(c)
			if err != nil {
				t.Errorf("receiver: %v after %d bytes", err, len(got))
			}
			checkBytes(t, "received", got, data)
			if err := e.wait(t); err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		})
		t.Run(host+"/listen", func(t *testing.T) { // tcppipe - :PORT < in, to a client that greets
			t.Parallel()
			e := start(t, Config{Source: stdio, Destination: listenEnd(), Stdin: testkit.Open(t, in)})
			c, err := net.Dial("tcp", dialAddr(host, e.addr(t)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hi\n")); err != nil {
				t.Fatal(err)
			}
			got, err := readSlowly(c)
			if err != nil {
				t.Errorf("receiver: %v after %d bytes", err, len(got))
			}
			checkBytes(t, "received", got, data)
			if err := e.wait(t); err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		})
	}
}

// TestUnacknowledgedClose: a peer that stops reading (its window stays shut) never
// acknowledges the tail: tcppipe gives up after CloseTimeout without progress and
// returns a *CutShortError that counts only the bytes the peer acknowledged.
func TestUnacknowledgedClose(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	data := testkit.RandomData(size)
	ln := listen(t, "127.0.0.1")
	if err := setReadBuffer(ln, 4<<10); err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), CloseTimeout: 300 * time.Millisecond})
	c := accept(t, ln)
	if _, err := c.Write([]byte("220 ready\r\n")); err != nil {
		t.Fatal(err)
	}
	err := e.wait(t) // the peer reads nothing until tcppipe has given up
	var cut *CutShortError
	if !errors.As(err, &cut) {
		t.Fatalf("Run = %v; want a *CutShortError", err)
	}
	got, _ := readSlowly(c)
	if cut.Bytes <= 0 || cut.Bytes >= size || cut.Bytes > int64(len(got)) {
		t.Errorf("Run = %v: %d bytes acknowledged; the peer then read %d of %d", err, cut.Bytes, len(got), size)
	}
	checkBytes(t, "received", got, data[:len(got)])
	if msg := err.Error(); !strings.Contains(msg, "acknowledged") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line saying how many bytes were acknowledged", msg)
	}
}

// finWait reports whether the local socket on port has sent its FIN and waits for its
// acknowledgement (FIN_WAIT1 in /proc/net/tcp).
func finWait(t testing.TB, port int) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip(err)
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "04" {
			return true
		}
	}
	return false
}

// TestResetWhileSettling: a peer that resets while tcppipe waits for its
// acknowledgements ends the wait at once, as a reset, not after CloseTimeout.
func TestResetWhileSettling(t *testing.T) {
	t.Parallel()
	data := testkit.RandomData(256 << 10)
	ln := listen(t, "127.0.0.1")
	if err := setReadBuffer(ln, 4<<10); err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), CloseTimeout: time.Minute})
	c := accept(t, ln)
	if _, err := c.Write([]byte("220 ready\r\n")); err != nil {
		t.Fatal(err)
	}
	engine := c.RemoteAddr().(*net.TCPAddr).Port
	waitFor(t, testTimeout, "tcppipe's FIN", func() bool { return finWait(t, engine) })
	began := time.Now()
	reset(c)
	err := e.wait(t)
	var cut *CutShortError
	if !errors.As(err, &cut) || !isReset(err) || time.Since(began) > 10*time.Second {
		t.Fatalf("Run = %v, %v after the reset; want a reset, at once", err, time.Since(began))
	}
}
