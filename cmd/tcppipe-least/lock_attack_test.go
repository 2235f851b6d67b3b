package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackSignalWhileLocked: another process holds FILE's lock (as flock(1) or a
// tcp-pf in a write-back would) and never lets go. An --add, --set or --remove waits for
// it, and says so once after a second, naming the lock file; SIGINT or SIGTERM then ends
// it at once with status 1 (the edit was not made: a script must not take it as done)
// and one line that says so, and FILE is as it was. Once the lock is free, the same
// --add is made exactly once. A blocking flock(2) let the signal kill it silently.
func TestAttackSignalWhileLocked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sig  syscall.Signal
		args []string
	}{
		{syscall.SIGTERM, []string{"--add", "::1", "5"}},
		{syscall.SIGINT, []string{"--set", "192.0.2.1", "9"}},
		{syscall.SIGTERM, []string{"--remove", "192.0.2.1"}},
	} {
		t.Run(tc.sig.String()+tc.args[0], func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "hosts")
			const text = "# pool\n192.0.2.1 7\n::1 3\n"
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			lk := flock.New(path + ".lock")
			if err := lk.Lock(); err != nil {
				t.Fatal(err)
			}
			defer lk.Unlock()
			p := testkit.StartCmd(t, exec.Command("tcppipe-least", append(tc.args, path)...))
			deadline := time.Now().Add(5 * time.Second)
			for p.Log.Count(`waiting`) == 0 && time.Now().Before(deadline) && !p.Exited() {
				time.Sleep(5 * time.Millisecond) // a poll, with a deadline
			}
			if n := p.Log.Count(`^tcppipe-least: waiting for the lock on ` + path + `\.lock`); n != 1 {
				t.Errorf("%d lines say what tcppipe-least waits for, want 1: %q", n, p.Log.String())
			}
			p.Signal(t, tc.sig)
			code, took := p.Exit(t, 5*time.Second)
			lines := strings.Split(strings.TrimSuffix(p.Log.String(), "\n"), "\n")
			last := lines[len(lines)-1]
			if code != 1 || took > time.Second || len(lines) != 2 || !strings.HasPrefix(last, "tcppipe-least: interrupted by signal while waiting for the lock on "+path+".lock") {
				t.Errorf("%v while the lock is held: exit %d after %v, stderr %q; want 1 within 1s, a line that it was interrupted",
					tc.sig, code, took.Round(time.Millisecond), p.Log.String())
			}
			if b, _ := os.ReadFile(path); string(b) != text {
				t.Errorf("the file after the signal: %q, want %q", b, text)
			}
		})
	}
	t.Run("lock freed", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(path, []byte("::1 3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		lk := flock.New(path + ".lock")
		if err := lk.Lock(); err != nil {
			t.Fatal(err)
		}
		p := testkit.StartCmd(t, exec.Command("tcppipe-least", "--add", "::1", "5", path))
		p.Log.WaitFor(t, `waiting for the lock`, 1, 5*time.Second)
		lk.Unlock()
		if code, _ := p.Exit(t, 5*time.Second); code != 0 {
			t.Fatalf("--add once the lock is free: exit %d, %q", code, p.Log.String())
		}
		if b, _ := os.ReadFile(path); string(b) != "::1 8\n" {
			t.Errorf("the file after the --add: %q, want \"::1 8\\n\"", b)
		}
	})
}
