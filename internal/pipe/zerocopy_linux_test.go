package pipe

import (
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ioCounters returns this process's rchar and wchar from /proc/self/io: the bytes that
// passed through read- and write-like system calls. sendfile(2) and copy_file_range(2)
// count there too, but splice(2) does not (checked on Linux 6.x; see bench/README-pipe.md),
// so a socket-to-file or socket-to-socket copy done with splice leaves them almost still,
// while one through user space adds every byte to both. Reaped children's counts are added
// to the parent's, so read them before waiting for a child.
func ioCounters(t testing.TB) (rchar, wchar int64) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no I/O accounting: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "wchar":
			wchar = n
		}
	}
	return rchar, wchar
}

// sendFromHelper starts a child process that connects to addr and sends size bytes.
func sendFromHelper(t testing.TB, addr string, size int64) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=send", "HELPER_ADDR="+addr, "HELPER_SIZE="+strconv.FormatInt(size, 10))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestZeroCopy moves 256 MiB from a socket through the engine to /dev/null and to a socket
// (stdout being a socket, as under inetd), plain and with -l and -p, and checks that this
// process's read and write counters grew by far less than that: the bytes went through
// splice in the kernel, not through a buffer in user space. (File to socket is sendfile,
// which the counters cannot tell from read+write; cmd/tcppipe checks that one with strace.)
func TestZeroCopy(t *testing.T) {
	// Not parallel: the counters are the whole process's.
	const size = 256 << 20
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	for _, tc := range []struct {
		name   string
		socket bool // stdout is a TCP socket
		cfg    Config
	}{
		{"socket-to-devnull", false, Config{}},
		{"socket-to-devnull-limited", false, Config{Rate: 64 << 30, Progress: true}},
		{"socket-to-socket", true, Config{}},
		{"socket-to-socket-limited", true, Config{Rate: 64 << 30, Progress: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Source, cfg.Destination, cfg.Stdout, cfg.Stderr = listenEnd(), stdio, devnull, io.Discard
			var sunk chan int64
			if tc.socket {
				ln := listen(t, "127.0.0.1")
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				f, err := c.(*net.TCPConn).File()
				if err != nil {
					t.Fatal(err)
				}
				c.Close() // the engine's stdout is now the only descriptor of this end
				defer f.Close()
				cfg.Stdout = f
				peer := accept(t, ln)
				sunk = make(chan int64, 1)
				go func() {
					n, _ := io.Copy(devnull, peer) // splice: leaves the counters alone too
					sunk <- n
				}()
			}
			r0, w0 := ioCounters(t)
			e := start(t, cfg)
			cmd := sendFromHelper(t, dialAddr("127.0.0.1", e.addr(t)), size)
			err := e.wait(t)
			if tc.socket {
				cfg.Stdout.Close() // EOF for the sink
				select {
				case n := <-sunk:
					if n != size {
						t.Errorf("the socket at stdout received %d bytes; want %d", n, size)
					}
				case <-time.After(testTimeout):
					t.Fatal("the sink did not finish")
				}
			}
			r1, w1 := ioCounters(t) // before reaping the helper, whose counts would be added
			if werr := cmd.Wait(); err != nil || werr != nil {
				t.Fatalf("engine: %v; sender: %v", err, werr)
			}
			t.Logf("moved %d MiB; rchar +%d, wchar +%d", size>>20, r1-r0, w1-w0)
			if r1-r0 > size/64 || w1-w0 > size/64 {
				t.Errorf("rchar grew by %d and wchar by %d while moving %d bytes: the data went through user space",
					r1-r0, w1-w0, size)
			}
		})
	}
}
