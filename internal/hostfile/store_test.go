package hostfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Add gives up on a lock another process holds when its context ends, writes nothing and
// says why; once the lock is free it adds to the entries the file has, and only those.
func TestStoreAddLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	writeFile(t, path, "# pool\na 10\nb 5\n", 0o644)
	s := NewStore(path)
	lk, err := os.OpenFile(path+LockSuffix, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Add(ctx, map[string]uint64{"a": 1})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Add with the lock held: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Add gave up after %v, its context ended after 50ms", d)
	}
	if want := "locking " + path + ".lock: held by another process"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if got := readFile(t, path); got != "# pool\na 10\nb 5\n" {
		t.Errorf("file changed while locked: %q", got)
	}
	_ = syscall.Flock(int(lk.Fd()), syscall.LOCK_UN)
	es, err := s.Add(context.Background(), map[string]uint64{"a": 3, "gone": 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Bytes != 13 || es[1].Bytes != 5 {
		t.Errorf("entries after Add: %+v", es)
	}
	if got := readFile(t, path); got != "# pool\na 13\nb 5\n" {
		t.Errorf("file after Add: %q (a name the file lacks is not appended)", got)
	}
}

// Watch tells of a change made by another writer (a rename over the file, an edit in
// place), and not of one this Store made or read itself.
func TestStoreWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 1\n", 0o644)
	s := NewStore(path)
	if _, _, err := s.Read(); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Watch(ctx, func() { calls.Add(1) }); err != nil {
		t.Fatal(err)
	}
	waitCalls := func(what string, n int32) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for calls.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("no change notice for %s within 2s", what)
			}
			time.Sleep(5 * time.Millisecond) // polling a counter with a deadline
		}
	}
	// What a notice is sent for: a version of the file this Store did not read or write.
	if s.changedSinceSeen() {
		t.Error("changed right after Read")
	}
	if _, err := s.Add(context.Background(), map[string]uint64{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if s.changedSinceSeen() {
		t.Error("changed after this Store's own Add")
	}
	// Another writer's replacement: a notice.
	if err := Update(path, false, func(f *File) error { f.Add("a", 5); return nil }); err != nil {
		t.Fatal(err)
	}
	if !s.changedSinceSeen() {
		t.Error("not changed after another writer's Update")
	}
	waitCalls("a replacement by another writer", 1)
	if _, _, err := s.Read(); err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	// An edit in place (an editor that writes the file itself): a notice.
	if err := os.WriteFile(path, []byte("a 1000\nb 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitCalls("an edit in place", before+1)
}
