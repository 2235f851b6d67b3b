package forward

import (
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

// update changes the host file as tcppipe-least does (locked read-modify-write, atomic
// rename), and returns when.
func update(t *testing.T, path string, fn func(f *hostfile.File)) time.Time {
	t.Helper()
	if err := hostfile.Update(path, false, func(f *hostfile.File) error { fn(f); return nil }); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// tcp-pf follows its host file live, long before any write-back: a host added becomes a
// candidate, a --set count is taken, and a removed host gets no new connections while its
// open one goes on; the bytes this process had not written yet survive every reread, even
// those of the removed host, which are written once it is back.
func TestFollowsHostFile(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	nameB := fmt.Sprintf("[::1]:%d", b.Port())
	path := writeFile(t, "# pool\n"+a.Addr()+" 0\n")
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9, Interval: time.Hour, Grace: -1})
	within := func(since time.Time, what, re string) {
		t.Helper()
		pf.log.WaitFor(t, re, 1, time.Second)
		t.Logf("%s: taken %v after the change", what, time.Since(since).Round(time.Millisecond))
	}

	c1 := testkit.Dial(t, pf.addr) // to a, and open through everything below
	testkit.RoundTrip(t, c1, 1, 1000)
	if got := openedTo(t, pf, 1); got != a.Addr() {
		t.Fatalf("connection 1 went to %s", got)
	}

	// Added: b (0 bytes) is the best host now.
	at := update(t, path, func(f *hostfile.File) { f.Add(nameB, 0) })
	within(at, "an added host", `host file .*: `+regexp.QuoteMeta(nameB)+` added$`)
	c2 := testkit.Dial(t, pf.addr)
	testkit.RoundTrip(t, c2, 2, 3000)
	if got := openedTo(t, pf, 2); got != nameB {
		t.Fatalf("connection 2 went to %s, want the added %s", got, nameB)
	}
	c2.Close()

	// --set: b gets far more bytes than a; a (2,000 pending, not written) is best again.
	at = update(t, path, func(f *hostfile.File) { f.Set(nameB, 1000000) })
	testkit.WaitUntil(t, time.Second, "the new count of b", func() bool {
		pf.bal.mu.Lock()
		defer pf.bal.mu.Unlock()
		return pf.bal.byName[nameB].base == 1000000
	})
	t.Logf("a --set: taken %v after the change", time.Since(at).Round(time.Millisecond))
	if n := pf.bal.pendingOf(a.Addr()); n != 2000 {
		t.Errorf("a's unwritten bytes after the reread: %d, want 2000", n)
	}
	if n := pf.bal.pendingOf(nameB); n != 6000 {
		t.Errorf("b's unwritten bytes after the reread: %d, want 6000", n)
	}

	// Removed: a gets no new connection; the open one goes on, and its bytes are kept.
	at = update(t, path, func(f *hostfile.File) { f.Remove(a.Addr()) })
	within(at, "a removed host", `host file .*: `+regexp.QuoteMeta(a.Addr())+` removed: no new connections`)
	c3 := testkit.Dial(t, pf.addr)
	testkit.RoundTrip(t, c3, 3, 500)
	if got := openedTo(t, pf, 3); got != nameB {
		t.Fatalf("connection 3 went to %s, want %s: a was removed", got, nameB)
	}
	c3.Close()
	testkit.RoundTrip(t, c1, 4, 5000)
	c1.Close()
	pf.log.WaitFor(t, `close #1 .* up=6000 .* down=6000 `, 1, 5*time.Second)

	// Back (as a new line, count 7): a's 12,000 unwritten bytes are added to it at the stop.
	at = update(t, path, func(f *hostfile.File) { f.Add(a.Addr(), 7) })
	within(at, "a host back", `host file .*: `+regexp.QuoteMeta(a.Addr())+` added$`)
	if err := pf.stop(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("# pool\n%s %d\n%s %d\n", nameB, 1000000+6000+1000, a.Addr(), 7+12000)
	if string(got) != want {
		t.Errorf("host file:\n%s\nwant:\n%s\nlog:\n%s", got, want, pf.log.String())
	}
}

// A host removed from the file while a connection to it is open: the connection finishes,
// moving every byte, and no new one goes there; its bytes, counted in its close line, are not
// written (that would put the host back in the file) but named at the stop, and the others'
// counts are written exactly.
func TestRemovedHostFinishes(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	nameB := fmt.Sprintf("[::1]:%d", b.Port())
	path := writeFile(t, fmt.Sprintf("%s 0\n%s 100000\n", a.Addr(), nameB))
	pf := startServer(t, "[::1]:0", Config{HostFile: path, Port: 9, Interval: time.Hour, Grace: -1})

	c1 := testkit.Dial(t, pf.addr)
	testkit.RoundTrip(t, c1, 1, 1000)
	if got := openedTo(t, pf, 1); got != a.Addr() {
		t.Fatalf("connection 1 went to %s", got)
	}
	update(t, path, func(f *hostfile.File) { f.Remove(a.Addr()) })
	pf.log.WaitFor(t, `host file .*: `+regexp.QuoteMeta(a.Addr())+` removed: no new connections`, 1, time.Second)
	for id := 2; id <= 4; id++ {
		c := testkit.Dial(t, pf.addr)
		testkit.RoundTrip(t, c, uint64(id), 100)
		c.Close()
		if got := openedTo(t, pf, id); got != nameB {
			t.Fatalf("connection %d went to %s after %s was removed", id, got, a.Addr())
		}
	}
	testkit.RoundTrip(t, c1, 5, 4000) // the open one goes on
	c1.Close()
	pf.log.WaitFor(t, `close #1 .* up=5000 .* down=5000 `, 1, 5*time.Second)
	pf.log.WaitFor(t, `close #4 `, 1, 5*time.Second)
	if err := pf.stop(); err != nil {
		t.Fatal(err)
	}
	pf.log.WaitFor(t, `not written to .*, which no longer has these hosts: `+regexp.QuoteMeta(a.Addr())+` 10000$`, 1, time.Second)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s %d\n", nameB, 100000+3*200); string(got) != want {
		t.Errorf("host file:\n%s\nwant:\n%s", got, want)
	}
}
