package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/testkit"
)

// resetAfter is the receiver's message for a sender that reset the connection.
var resetAfter = regexp.MustCompile(`(?m)^tcppipe: SOURCE \S+ reset by peer after (\d+) bytes \([0-9.]+ [KMG]?i?B\)\n\z`)

// signalled is a process's message for SIGTERM mid-transfer.
var signalled = regexp.MustCompile(`(?m)^tcppipe: interrupted by signal after (\d+) bytes \([0-9.]+ [KMG]?i?B\)\n\z`)

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestSenderCutShortResets: a sender stopped by SIGTERM before its SOURCE ended resets
// the connection, so the receiving tcppipe exits 1 saying so and how many bytes came,
// rather than 0 with a partial file. Both shapes: the sender connects, and it listens.
// The bytes the receiver wrote are exactly those it says, and those the sender says.
func TestSenderCutShortResets(t *testing.T) {
	t.Parallel()
	in, data := randomFile(t, 20<<20)
	for _, tc := range []struct {
		name          string
		senderListens bool
		senderArgs    func(port int) []string
		receiverArgs  func(port int) []string
	}{
		{"sender-connects", false,
			func(p int) []string { return []string{"-l", "1M", "-", "127.0.0.1", strconv.Itoa(p)} },
			func(p int) []string { return []string{":" + strconv.Itoa(p), "-"} }},
		{"sender-listens", true,
			func(p int) []string { return []string{"-l", "1M", "-", ":" + strconv.Itoa(p)} },
			func(p int) []string { return []string{"::1", strconv.Itoa(p), "-"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.senderListens && !hasIPv6() {
				t.Skip("no IPv6 loopback")
			}
			out := filepath.Join(t.TempDir(), "out")
			var send, recv *proc
			if tc.senderListens {
				var port int
				send, port = startListening(t, testkit.Open(t, in), nil, tc.senderArgs)
				recv = start(t, nil, testkit.Create(t, out), tc.receiverArgs(port)...)
			} else {
				var port int
				recv, port = startListening(t, nil, testkit.Create(t, out), tc.receiverArgs)
				send = start(t, testkit.Open(t, in), nil, tc.senderArgs(port)...)
			}
			testkit.WaitUntil(t, timeout, "bytes to flow", func() bool { return fileSize(out) >= 256<<10 })
			if err := send.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			code, stderr := send.wait(t)
			m := signalled.FindStringSubmatch(stderr)
			if code != 1 || m == nil {
				t.Fatalf("sender: exit %d, stderr %q; want 1, interrupted after N bytes", code, stderr)
			}
			code, rstderr := recv.wait(t)
			r := resetAfter.FindStringSubmatch(rstderr)
			if code != 1 || r == nil {
				t.Fatalf("receiver: exit %d, stderr %q; want 1, reset by peer after N bytes", code, rstderr)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if strconv.Itoa(len(got)) != r[1] || r[1] != m[1] || len(got) >= len(data) {
				t.Errorf("receiver wrote %d bytes and says %s; sender says %s; of %d", len(got), r[1], m[1], len(data))
			}
			testkit.CheckSame(t, "received", got, data[:len(got)])
		})
	}
}

// TestStdinReadErrorResets: a read error on stdin is no clean end either: the connection
// is reset, and the receiver says so.
func TestStdinReadErrorResets(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "out")
	recv, port := startListening(t, nil, testkit.Create(t, out), func(p int) []string { return []string{":" + strconv.Itoa(p), "-"} })
	send := start(t, testkit.Open(t, t.TempDir()), nil, "-", "127.0.0.1", strconv.Itoa(port)) // read(2) on a directory: EISDIR
	if code, stderr := send.wait(t); code != 1 || !strings.Contains(stderr, "is a directory") {
		t.Errorf("sender: exit %d, stderr %q; want 1 and the read error", code, stderr)
	}
	if code, stderr := recv.wait(t); code != 1 || !resetAfter.MatchString(stderr) {
		t.Errorf("receiver: exit %d, stderr %q; want 1, reset by peer after 0 bytes", code, stderr)
	}
}

// pipeHolds returns the bytes waiting in the pipe whose read end is r.
func pipeHolds(t testing.TB, r *os.File) int {
	t.Helper()
	n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ) // FIONREAD
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSignalCountIsExact: tcppipe writing to a stdout pipe that nobody drains, signalled,
// reports the bytes that are in the pipe, to the byte, and adds exactly those to its -b
// entry (not 0 because a 1 MiB step had not finished).
func TestSignalCountIsExact(t *testing.T) {
	t.Parallel()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	bind := filepath.Join(t.TempDir(), "bind")
	if err := os.WriteFile(bind, []byte("127.0.0.1 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in, _ := randomFile(t, 4<<20)
	recv, port := startListening(t, nil, pw, func(p int) []string { return []string{"-b", bind, ":" + strconv.Itoa(p), "-"} })
	pw.Close()
	send := start(t, testkit.Open(t, in), nil, "-", "127.0.0.1", strconv.Itoa(port))
	// The pipe fills and stays full: nothing reads it.
	var held int
	testkit.WaitUntil(t, timeout, "the pipe to fill", func() bool {
		n := pipeHolds(t, pr)
		full := n > 0 && n == held
		held = n
		return full
	})
	if err := recv.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, stderr := recv.wait(t)
	m := signalled.FindStringSubmatch(stderr)
	if code != 1 || m == nil {
		t.Fatalf("exit %d, stderr %q; want 1, interrupted after N bytes", code, stderr)
	}
	held = pipeHolds(t, pr)
	if m[1] != strconv.Itoa(held) {
		t.Errorf("tcppipe says %s bytes went through; the pipe holds %d", m[1], held)
	}
	want := fmt.Sprintf("127.0.0.1 %d\n", 5+held)
	if b, _ := os.ReadFile(bind); string(b) != want {
		t.Errorf("bind file %q; want %q", b, want)
	}
	send.wait(t)
	_ = time.Second
}

// TestInputIsOutput: "tcppipe - - < f >> f" would grow f without end; like cat, tcppipe
// refuses at once, with one line and exit 1, and leaves f as it was. Devices such as
// /dev/null on both sides are fine.
func TestInputIsOutput(t *testing.T) {
	t.Parallel()
	f, data := randomFile(t, 64<<10)
	out, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// -l bounds the harm should the check be missing: the file grows 1 MiB a second.
	p := start(t, testkit.Open(t, f), out, "-l", "1M", "-", "-")
	testkit.WaitUntil(t, 10*time.Second, "tcppipe to refuse", p.Exited)
	code, stderr := p.wait(t)
	if code != 1 || stderr != "tcppipe: input file is output file: stdin and stdout are the same regular file\n" {
		t.Errorf("exit %d, stderr %q; want 1, input file is output file", code, stderr)
	}
	checkOutFile(t, f, data)

	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if code, stderr := start(t, devnull, devnull, "-", "-").wait(t); code != 0 || stderr != "" {
		t.Errorf("/dev/null to itself: exit %d, stderr %q; want 0", code, stderr)
	}
}

// TestNoSpaceMessage: a destination that is full says so ("no space left on device"),
// not splice's "invalid argument", whether the source is a socket or a file.
func TestNoSpaceMessage(t *testing.T) {
	t.Parallel()
	in, _ := randomFile(t, 1<<20)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer full.Close()
	const want = "tcppipe: writing to stdout: no space left on device after 0 bytes (0 B)\n"
	recv, port := startListening(t, nil, full, func(p int) []string { return []string{":" + strconv.Itoa(p), "-"} })
	start(t, testkit.Open(t, in), nil, "-", "127.0.0.1", strconv.Itoa(port)) // ends by itself when recv does
	if code, stderr := recv.wait(t); code != 1 || stderr != want {
		t.Errorf("socket to /dev/full: exit %d, stderr %q; want 1, %q", code, stderr, want)
	}
	if code, stderr := start(t, testkit.Open(t, in), full, "-", "-").wait(t); code != 1 || stderr != want {
		t.Errorf("file to /dev/full: exit %d, stderr %q; want 1, %q", code, stderr, want)
	}
}

// TestBindFileOverridesDefaultFamily: -b chooses the local address, so INADDR_DEFAULT's
// family does not matter then, and is not checked against HOST.
func TestBindFileOverridesDefaultFamily(t *testing.T) {
	getenv := func(k string) string { return map[string]string{"INADDR_DEFAULT": "::1"}[k] }
	if _, err := parse(t.Context(), []string{"-b", "bind", "-", "127.0.0.1", "9"}, io.Discard, getenv); err != nil {
		t.Errorf("-b with INADDR_DEFAULT=::1 and 127.0.0.1: %v", err)
	}
	if _, err := parse(t.Context(), []string{"-", "127.0.0.1", "9"}, io.Discard, getenv); err == nil {
		t.Error("INADDR_DEFAULT=::1 and 127.0.0.1 without -b: accepted")
	}
}
