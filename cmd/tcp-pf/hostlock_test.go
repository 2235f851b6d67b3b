package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

// SIGTERM while another process holds the host file's lock (flock FILE.lock sleep N): tcp-pf
// still ends within a few seconds, with status 1, and prints the counts it could not write
// as tcppipe-least --add lines; run once the lock is free, they give the exact counts.
func TestSIGTERMWithHostFileLocked(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	dir := filepath.Join(t.TempDir(), "a dir") // a path the lines must quote
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hosts")
	text := "# pool\n%s %d\n[::1]:%d %d\n"
	if err := os.WriteFile(path, []byte(fmt.Sprintf(text, a.Addr(), 0, b.Port(), 5)), 0o644); err != nil {
		t.Fatal(err)
	}
	var unlock func()
	p := startPF(t, "127.0.0.1", "", "-l", path, "-p", "9", "-i", "0.05", "--grace", "0")
	// a (0) gets the first connection, b (5) the second, and b (40005 < 60000) the third,
	// which stays open and moves more bytes once the file is locked.
	var want [2]int64
	for i, n := range []int64{30000, 20000, 1000} {
		c := testkit.Dial(t, p.addr)
		testkit.RoundTrip(t, c, uint64(i), n)
		want[min(i, 1)] += 2 * n
		if i < 2 {
			c.Close()
			continue
		}
		lk, err := os.OpenFile(path+hostfile.LockSuffix, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Close()
		if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		defer syscall.Flock(int(lk.Fd()), syscall.LOCK_UN)
		unlock = func() { _ = syscall.Flock(int(lk.Fd()), syscall.LOCK_UN) }
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		testkit.RoundTrip(t, c, 9, 10000) // not written yet: the file is locked
		want[1] += 20000
	}
	start := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("tcp-pf still running 10s after SIGTERM with the host file locked:\n%s", p.Log.String())
	}
	t.Logf("exited %v after SIGTERM", time.Since(start))
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1:\n%s", p.Err(), p.Log.String())
	}
	p.Log.WaitFor(t, `^tcp-pf: writing counts to .*: locking .*: held by another process .*; the lines below add them$`, 1, time.Second)
	cmds := regexp.MustCompile(`(?m)^tcppipe-least --add .*$`).FindAllString(p.Log.String(), -1)
	if len(cmds) == 0 || len(cmds) > 2 {
		t.Fatalf("%d add lines, want 1 or 2:\n%s", len(cmds), p.Log.String())
	}
	unlock()
	bin := testkit.Build(t, "shd-tcp-tools/cmd/tcppipe-least")[""]
	for _, c := range cmds {
		sh := exec.Command("sh", "-c", c)
		sh.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if w := fmt.Sprintf(text, a.Addr(), want[0], b.Port(), 5+want[1]); string(got) != w {
		t.Errorf("host file after the lines ran:\n%s\nwant:\n%s\nlines:\n%s", got, w, strings.Join(cmds, "\n"))
	}
}
