package pipe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestBindFile checks -b: the local address is the entry with the fewest bytes, the peer
// sees it, and the bytes moved are added to that entry, with every other line kept.
func TestBindFile(t *testing.T) {
	t.Parallel()
	const file = "# local addresses\n127.0.0.2 500\n\nnot an address at all\n127.0.0.3\t100  \n127.0.0.4 900\n"
	data := testkit.RandomData(1 << 20)
	want := strings.Replace(file, "127.0.0.3\t100  ", fmt.Sprintf("127.0.0.3\t%d  ", 100+len(data)), 1)

	t.Run("connect", func(t *testing.T) {
		t.Parallel()
		bind := testkit.WriteFile(t, "bind", []byte(file))
		ln := listen(t, "127.0.0.1")
		e := start(t, Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)),
			Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), BindFile: bind})
		c := accept(t, ln)
		if ip := c.RemoteAddr().(*net.TCPAddr).IP.String(); ip != "127.0.0.3" {
			t.Errorf("peer address %s; want 127.0.0.3, the least entry", ip)
		}
		got, err := readAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
		checkBytes(t, "received", got, data)
		checkFile(t, bind, []byte(want))
		if s := e.stderr.String(); !strings.Contains(s, "tcppipe: warning: "+bind+":4: malformed entry") {
			t.Errorf("stderr %q: want a warning naming %s:4", s, bind)
		}
	})
	t.Run("listen", func(t *testing.T) {
		t.Parallel()
		bind := testkit.WriteFile(t, "bind", []byte(file))
		out, outPath := createFile(t)
		e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out, BindFile: bind})
		a := e.addr(t)
		if ip := a.IP.String(); ip != "127.0.0.3" {
			t.Errorf("listening on %s; want 127.0.0.3, the least entry", a)
		}
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := sendAll(c.(*net.TCPConn), data); err != nil {
			t.Fatal(err)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
		checkFile(t, outPath, data)
		checkFile(t, bind, []byte(want))
	})
}

// TestNetworkFileFailover checks host ".": the entry with the fewest bytes is tried first;
// when it refuses, the next-fewest is, and so on; the bytes are added to the host that took
// the connection only; comments, blank and malformed lines are kept verbatim.
func TestNetworkFileFailover(t *testing.T) {
	t.Parallel()
	ln := listen(t, "127.0.0.1")
	refused := refusedPort(t)
	hosts := []string{
		"# test hosts",
		"127.0.0.1 70",
		fmt.Sprintf("127.0.0.1:%d 0", refused), // fewest: tried first, refuses
		"bad line with four fields",
		"",
		fmt.Sprintf("127.0.0.2:%d 20", refused), // next: refuses too
		"127.0.0.1 999",                         // a duplicate name: the first entry is used
		"127.0.0.1:1x 5",                        // malformed port: never tried
	}
	file := strings.Join(hosts, "\n") + "\n"
	path := testkit.WriteFile(t, "hosts", []byte(file))
	data := testkit.RandomData(2 << 20)
	e := start(t, Config{Source: stdio, Destination: connectEnd(".", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), NetworkFile: path})
	got, err := readAll(accept(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, "received", got, data)
	hosts[1] = fmt.Sprintf("127.0.0.1 %d", 70+len(data))
	checkFile(t, path, []byte(strings.Join(hosts, "\n")+"\n"))
	stderr := e.stderr.String()
	for _, w := range []string{
		// Each failure says that tcppipe goes on, and with which host: a bare "connection
		// refused" line reads as the end of the run.
		fmt.Sprintf("tcppipe: connecting to 127.0.0.1:%d: connection refused; trying the next host, 127.0.0.2:%d\n", refused, refused),
		fmt.Sprintf("tcppipe: connecting to 127.0.0.2:%d: connection refused; trying the next host, 127.0.0.1:%d\n", refused, port(ln)),
		"tcppipe: warning: " + path + ":4: malformed entry: more than two fields\n",
		"tcppipe: warning: " + path + ":8: malformed entry",
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr %q: want %q", stderr, w)
		}
	}
}

// TestNetworkFileAllRefused checks that when every host refuses, the run fails naming the
// count and the last failure, and the file is left as it was.
func TestNetworkFileAllRefused(t *testing.T) {
	t.Parallel()
	refused := refusedPort(t)
	file := fmt.Sprintf("127.0.0.1 5\n127.0.0.2 1\n127.0.0.3:%d 9\n", refused)
	path := testkit.WriteFile(t, "hosts", []byte(file))
	e := start(t, Config{Source: stdio, Destination: connectEnd(".", refused),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", []byte("x"))), NetworkFile: path})
	err := e.wait(t)
	want := fmt.Sprintf("all 3 hosts failed, last: connecting to 127.0.0.3:%d: connection refused", refused)
	if err == nil || err.Error() != want {
		t.Fatalf("Run = %v; want %q", err, want)
	}
	// The failures before the last are warnings; the last one is the error, said once.
	if got := e.stderr.String(); strings.Count(got, "\n") != 2 || strings.Contains(got, "connecting to 127.0.0.3") {
		t.Errorf("stderr %q: want the two earlier failures, one line each", got)
	}
	checkFile(t, path, []byte(file))
	if _, err := os.Stat(path + ".lock"); err == nil {
		t.Errorf("%s.lock exists: nothing was to be written", path)
	}
}

// TestFilesCheckedFirst checks that every file the run needs is read before any socket is
// opened: when one cannot be used, nothing connects and nothing listens.
func TestFilesCheckedFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := testkit.WriteFile(t, "good", []byte("127.0.0.1 0\n"))
	noEntry := testkit.WriteFile(t, "noentry", []byte("# no usable entry\n\nthree fields here\n127.0.0.1 notanumber\n"))
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"insert-missing", Config{InsertFile: missing}, "insert file " + missing + ": no such file or directory"},
		{"insert-directory", Config{InsertFile: dir}, "insert file " + dir + ": is a directory"},
		{"bind-missing", Config{BindFile: missing}, "bind file " + missing + ": no such file or directory"},
		{"bind-directory", Config{BindFile: dir}, "bind file " + dir + ": is a directory"},
		{"bind-no-entry", Config{BindFile: noEntry}, "bind file " + noEntry + ": no usable host entry"},
		{"network-missing", Config{NetworkFile: missing}, "network file " + missing + ": no such file or directory"},
		{"network-no-entry", Config{NetworkFile: noEntry}, "network file " + noEntry + ": no usable host entry"},
		{"network-ok-insert-missing", Config{NetworkFile: good, InsertFile: missing}, "insert file " + missing + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/connect", func(t *testing.T) {
			t.Parallel()
			ln := listen(t, "127.0.0.1")
			cfg := tt.cfg
			cfg.Source, cfg.Stdin = stdio, testkit.Open(t, good)
			cfg.Destination = connectEnd("127.0.0.1", port(ln))
			if cfg.NetworkFile != "" {
				cfg.Destination = connectEnd(".", port(ln))
			}
			e := start(t, cfg)
			if err := e.wait(t); err == nil || err.Error() != tt.want {
				t.Errorf("Run = %v; want %q", err, tt.want)
			}
			noConnection(t, ln)
		})
		if tt.cfg.NetworkFile != "" {
			continue
		}
		t.Run(tt.name+"/listen", func(t *testing.T) {
			t.Parallel()
			out, _ := createFile(t)
			cfg := tt.cfg
			cfg.Source, cfg.Destination, cfg.Stdout = listenEnd(), stdio, out
			e := start(t, cfg)
			if err := e.wait(t); err == nil || err.Error() != tt.want {
				t.Errorf("Run = %v; want %q", err, tt.want)
			}
			select {
			case a := <-e.ready:
				t.Errorf("listened on %s before the error", a)
			default:
			}
		})
	}
	// A file with no usable entry is not rewritten, and warns about each malformed line.
	checkFile(t, noEntry, []byte("# no usable entry\n\nthree fields here\n127.0.0.1 notanumber\n"))
}

// TestPeriodicWriteBack checks that counts are written back every Interval while a slow
// transfer runs (not only at its end), and that a signal mid-transfer writes the final
// count: exactly the bytes that went through, which is what the receiver got.
func TestPeriodicWriteBack(t *testing.T) {
	t.Parallel()
	ln := listen(t, "127.0.0.1")
	path := testkit.WriteFile(t, "hosts", []byte("# hosts\n127.0.0.1 1000\n"))
	const rate = 256 << 10
	data := testkit.RandomData(8 * rate) // 8 s worth: the transfer is still running when we look
	e := start(t, Config{Source: stdio, Destination: connectEnd(".", port(ln)),
		Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), NetworkFile: path, Rate: rate, Interval: 100 * time.Millisecond})
	c := accept(t, ln)
	received := make(chan []byte, 1)
	go func() {
		b, _ := readAll(c)
		received <- b
	}()
	// Two write-backs while the engine still runs: the count grows, then grows again.
	var first uint64
	waitFor(t, 10*time.Second, "a first write-back", func() bool {
		first = hostCount(t, path, "127.0.0.1")
		return first > 1000
	})
	waitFor(t, 10*time.Second, "a second write-back", func() bool { return hostCount(t, path, "127.0.0.1") > first })
	if !e.running() {
		t.Fatal("the transfer ended before the write-backs were seen; they were not periodic")
	}
	e.cancel() // SIGTERM
	err := e.wait(t)
	var cut *CutShortError
	if !errors.As(err, &cut) || !errors.Is(err, errInterrupted) {
		t.Fatalf("Run = %v; want a transfer cut short by the signal", err)
	}
	got := <-received
	if int64(len(got)) != cut.Bytes || cut.Bytes >= int64(len(data)) {
		t.Errorf("receiver got %d bytes; the error says %d went through, of %d", len(got), cut.Bytes, len(data))
	}
	checkBytes(t, "received", got, data[:len(got)])
	if n := hostCount(t, path, "127.0.0.1"); n != 1000+uint64(cut.Bytes) {
		t.Errorf("final count %d; want 1000 + %d", n, cut.Bytes)
	}
}

// TestLocalAddress checks INADDR_DEFAULT (Config.Local): outgoing connections come from
// it, and a ":PORT" end listens on it only.
func TestLocalAddress(t *testing.T) {
	t.Parallel()
	local := netip.MustParseAddr("127.0.0.5")
	data := []byte("from a chosen local address")
	t.Run("connect", func(t *testing.T) {
		t.Parallel()
		ln := listen(t, "127.0.0.1")
		e := start(t, Config{Source: stdio, Destination: connectEnd("localhost", port(ln)),
			Stdin: testkit.Open(t, testkit.WriteFile(t, "in", data)), Local: local})
		c := accept(t, ln)
		if ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); ip != local {
			t.Errorf("peer address %s; want %s", ip, local)
		}
		if got, err := readAll(c); err != nil || string(got) != string(data) {
			t.Errorf("received %q, %v", got, err)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("listen", func(t *testing.T) {
		t.Parallel()
		out, outPath := createFile(t)
		e := start(t, Config{Source: listenEnd(), Destination: stdio, Stdout: out, Local: local})
		a := e.addr(t)
		if a.AddrPort().Addr().Unmap() != local {
			t.Errorf("listening on %s; want %s only", a, local)
		}
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := sendAll(c.(*net.TCPConn), data); err != nil {
			t.Fatal(err)
		}
		if err := e.wait(t); err != nil {
			t.Fatal(err)
		}
		checkFile(t, outPath, data)
	})
}
