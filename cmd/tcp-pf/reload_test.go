package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// SIGHUP rereads the host file, also a change that the live watch cannot see (an edit in
// place that keeps the file's size and modification time, made while tcp-pf was stopped),
// and does not end tcp-pf: the counts it had not written yet are kept and written at the
// stop, exactly.
func TestSIGHUPRereads(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	text := "# pool\n%s %d\n[::1]:%d %d\n"
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(text, a.Addr(), 90000, b.Port(), 10000)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPF(t, "127.0.0.1", "", "-l", path, "-p", "9", "-i", "3600", "--grace", "0")
	id := 0
	connect := func(n int64) string {
		t.Helper()
		id++
		c := testkit.Dial(t, p.addr)
		if n > 0 {
			testkit.RoundTrip(t, c, uint64(id), n)
		}
		m := p.Log.WaitFor(t, fmt.Sprintf(`open #%d \S+ -> (\S+)$`, id), 1, 5*time.Second)
		c.Close()
		p.Log.WaitFor(t, fmt.Sprintf(`close #%d `, id), 1, 5*time.Second)
		return m[1]
	}
	nameB := fmt.Sprintf("[::1]:%d", b.Port())
	if got := connect(1000); got != nameB {
		t.Fatalf("connection 1 went to %s, want %s (10000 bytes)", got, nameB)
	}

	// The counts swapped in place, size and time kept, while tcp-pf is stopped: when it
	// goes on, the watch finds the file as it last read it, and rereads nothing.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	edited := fmt.Sprintf(text, a.Addr(), 10000, b.Port(), 90000)
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// a (10000) is the best host once the file is reread (b: 90000 + 2000 moved).
	deadline := time.Now().Add(2 * time.Second)
	for connect(0) != a.Addr() {
		if time.Now().After(deadline) {
			t.Fatalf("no connection to %s within 2s of SIGHUP:\n%s", a.Addr(), p.Log.String())
		}
	}
	if got := connect(500); got != a.Addr() {
		t.Fatalf("connection %d went to %s, want %s", id, got, a.Addr())
	}
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(text, a.Addr(), 10000+1000, b.Port(), 90000+2000); string(got) != want {
		t.Errorf("host file after SIGHUP and SIGTERM:\n%s\nwant:\n%s\nlog:\n%s", got, want, p.Log.String())
	}
}
