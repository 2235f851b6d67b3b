package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackHostFileReplaced: while tcp-pf relays with -l FILE -i 0.5, FILE is renamed
// away and something else put in its place: a FIFO nobody writes, a directory, a
// symbolic link to another host file, a file of 50,000 malformed lines (a log moved
// over it by mistake), or a 100 MiB file (a disk image, a core dump). Then SIGHUP asks for a reread and clients go on. tcp-pf must go
// on serving from the hosts it had, read nothing that never ends, end within 5 s of
// SIGTERM, keep its warnings bounded, and lose no count: the bytes moved are in the old
// file, in what replaced it, or in the tcppipe-least --add lines it prints (exit 1)
// when nothing can take them. The hosts are on IPv4 and IPv6 loopback.
func TestAttackHostFileReplaced(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"fifo", "directory", "symlink", "malformed-lines", "100MiB"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
			b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
			dir := t.TempDir()
			path := filepath.Join(dir, "hosts")
			entries := fmt.Sprintf("%s 0\n[::1]:%d 0\n", a.Addr(), b.Port())
			if err := os.WriteFile(path, []byte(entries), 0o644); err != nil {
				t.Fatal(err)
			}
			p := startPF(t, "127.0.0.1", "", "-l", path, "-i", "0.5", "--grace", "0")
			var moved int64
			trip := func(seed uint64, n int64) {
				t.Helper()
				c := testkit.Dial(t, p.addr)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				testkit.RoundTrip(t, c, seed, n)
				c.Close()
				moved += 2 * n
			}
			trip(1, 30000)
			trip(2, 20000)
			testkit.WaitUntil(t, 10*time.Second, "the first counts written", func() bool {
				return countsIn(t, path) > 0
			})

			old := filepath.Join(dir, "hosts.old")
			if err := os.Rename(path, old); err != nil {
				t.Fatal(err)
			}
			other := filepath.Join(dir, "other")
			switch kind {
			case "fifo":
				if err := syscall.Mkfifo(path, 0o644); err != nil {
					t.Fatal(err)
				}
			case "directory":
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			case "symlink":
				if err := os.WriteFile(other, []byte(entries), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("other", path); err != nil {
					t.Fatal(err)
				}
			case "100MiB":
				f, err := os.Create(other)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(100 << 20); err != nil { // sparse: made at once
					t.Fatal(err)
				}
				f.Close()
				if err := os.Rename(other, path); err != nil {
					t.Fatal(err)
				}
			case "malformed-lines":
				var junk bytes.Buffer
				junk.WriteString(entries)
				for i := range 50000 {
					fmt.Fprintf(&junk, "Dec  1 20:24:%02d host sshd[%d]: Connection closed by 192.0.2.1\n", i%60, i)
				}
				if err := os.WriteFile(other, junk.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(other, path); err != nil {
					t.Fatal(err)
				}
			}
			p.Signal(t, syscall.SIGHUP)
			switch kind { // the reread has taken it
			case "malformed-lines":
				p.Log.WaitFor(t, `hosts:\d+: malformed entry`, 1, 10*time.Second)
			case "100MiB":
				p.Log.WaitFor(t, `hosts(:1: malformed entry|: larger than)`, 1, 10*time.Second)
			}
			for i := range 4 {
				trip(uint64(10+i), 10000)
			}
			// The six connections ended, then the stop.
			testkit.WaitUntil(t, 10*time.Second, "the connections' close lines", func() bool {
				return p.Log.Count(` close #`) >= 6
			})
			if rss := p.RSS(t); kind == "100MiB" && rss > 100<<10 {
				t.Errorf("tcp-pf's RSS %d MiB with a 100 MiB file in place of the host file, want it refused, not read", rss>>10)
			}
			start := time.Now()
			p.Signal(t, syscall.SIGTERM)
			select {
			case <-p.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("tcp-pf still running 5s after SIGTERM with the host file replaced (%s)", kind)
			}
			t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
			code := 0
			var ee *exec.ExitError
			if errors.As(p.Err(), &ee) {
				code = ee.ExitCode()
			} else if p.Err() != nil {
				t.Fatal(p.Err())
			}

			// Every byte counted somewhere, once.
			var printed int64
			for _, m := range regexp.MustCompile(`(?m)^tcppipe-least --add \S+ (\d+) `).FindAllStringSubmatch(p.Log.String(), -1) {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				printed += n
			}
			inOld := countsIn(t, old)
			var inNew int64
			switch kind {
			case "fifo", "directory", "100MiB":
				if code != 1 {
					t.Errorf("exit status %d with counts that no file can take, want 1", code)
				}
			case "symlink", "malformed-lines":
				if code != 0 {
					t.Errorf("exit status %d, want 0", code)
				}
				inNew = countsIn(t, path)
			}
			if inOld+inNew+printed != moved {
				t.Errorf("%d bytes moved; counted %d in the old file, %d in the new, %d in --add lines", moved, inOld, inNew, printed)
			}
			if kind == "symlink" {
				if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("the symbolic link is gone after the write-backs: %v, %v", fi, err)
				}
			}
			if n := p.Log.Count(`malformed entry`); n > 20 {
				t.Errorf("%d malformed-entry warnings on stderr, want a bounded few", n)
			}
		})
	}
}

// countsIn returns the sum of the counts of the usable entries of the host file at path.
func countsIn(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, m := range regexp.MustCompile(`(?m)^\S+ (\d+)$`).FindAllSubmatch(b, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		sum += n
	}
	return sum
}
