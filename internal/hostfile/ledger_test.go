package hostfile

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestLedgerFlush(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "# pool\na 10\nb 5\n", 0o644)
	l := NewLedger(path)
	l.Add("a", 3)
	l.Add("c", 4)
	l.Add("c", 3)
	l.Add("b", 0)
	if got := l.Pending("c"); got != 7 {
		t.Errorf("Pending(c) = %d, want 7", got)
	}
	es, err := l.Flush()
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Name: "a", Host: "a", Bytes: 13, Line: 2},
		{Name: "b", Host: "b", Bytes: 5, Line: 3},
	} // c is not in the file: its count is dropped
	if len(es) != len(want) {
		t.Fatalf("Flush() = %+v", es)
	}
	for i := range es {
		if es[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, es[i], want[i])
		}
	}
	if got := readFile(t, path); got != "# pool\na 13\nb 5\n" {
		t.Errorf("file = %q", got)
	}
	for _, name := range []string{"a", "b", "c"} {
		if n := l.Pending(name); n != 0 {
			t.Errorf("Pending(%s) = %d after Flush", name, n)
		}
	}

	// Nothing pending: the file is read, not written, and what others wrote is seen.
	writeFile(t, path, "a 1\nb 2\n", 0o644)
	before, _ := os.Stat(path)
	es, err = l.Flush()
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Bytes != 1 || es[1].Bytes != 2 {
		t.Errorf("Flush() with nothing pending = %+v", es)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Error("a Flush with nothing pending rewrote the file")
	}
}

func TestLedgerSaturates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 5\n", 0o644)
	l := NewLedger(path)
	l.Add("a", math.MaxUint64-1)
	l.Add("a", 2)
	if got := l.Pending("a"); got != math.MaxUint64 {
		t.Errorf("Pending = %d, want 2^64-1", got)
	}
	if _, err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "a 18446744073709551615\n" {
		t.Errorf("file = %q", got)
	}
}

func TestLedgerFlushFailureKeepsPending(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 1\n", 0o644)
	l := NewLedger(path)
	l.Add("a", 5)

	// The file is gone: Flush must not create it, and must keep the count.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Flush(); err == nil {
		t.Fatal("Flush of a removed file succeeded")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Flush created the file: %v", err)
	}
	if got := l.Pending("a"); got != 5 {
		t.Errorf("Pending after a failed Flush = %d, want 5", got)
	}

	// The lock cannot be taken (its path is a directory): same.
	writeFile(t, path, "a 1\n", 0o644)
	if err := os.Remove(path + LockSuffix); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.Mkdir(path+LockSuffix, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Flush(); err == nil {
		t.Fatal("Flush without the lock succeeded")
	}
	if got := readFile(t, path); got != "a 1\n" {
		t.Errorf("file = %q after a failed Flush", got)
	}
	l.Add("a", 1)
	if got := l.Pending("a"); got != 6 {
		t.Errorf("Pending = %d, want 6", got)
	}

	// Once the file can be written, the counts go in exactly once.
	if err := os.Remove(path + LockSuffix); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "a 7\n" {
		t.Errorf("file = %q, want a 7", got)
	}
	if got := l.Pending("a"); got != 0 {
		t.Errorf("Pending = %d after Flush", got)
	}
}

func TestLedgerConcurrent(t *testing.T) {
	const workers, adds = 8, 500
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 0\nb 0\n", 0o644)
	l := NewLedger(path)

	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "a"
			if i%2 == 1 {
				name = "b"
			}
			for range adds {
				l.Add(name, 1)
				_ = l.Pending(name)
			}
		}()
	}
	// Flushes race with the Adds and with each other.
	done := make(chan struct{})
	var fwg sync.WaitGroup
	for range 2 {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			for {
				if _, err := l.Flush(); err != nil {
					t.Error(err)
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	fwg.Wait()
	if _, err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "a 2000\nb 2000\n"
	if got := readFile(t, path); got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
}

// A host removed from the file while counts for it are pending stays removed.
func TestLedgerDropsRemovedHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("# pool\na 1\nb 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := NewLedger(path)
	l.Add("a", 10)
	l.Add("b", 20)
	if err := Update(path, false, func(f *File) error {
		if !f.Remove("b") {
			t.Fatal("b not found")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "# pool\na 11\n" {
		t.Fatalf("file after flush:\n%s", got)
	}
	if l.Pending("b") != 0 {
		t.Fatalf("pending for removed host: %d", l.Pending("b"))
	}
}
