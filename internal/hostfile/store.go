package hostfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Store is a host file seen as the store of counts that processes share: it reads the
// entries, adds counts to them under the file's lock, and tells when the file changed.
// It is what a long-running tool needs of the file (tcp-pf's balancer); another store (one
// shared by several machines) would offer the same three things. Safe for simultaneous use.
type Store struct {
	path string

	mu   sync.Mutex
	seen fileID // the version of the file last read or written through this Store
}

// fileID tells two versions of a file apart: a replacement has a new inode, an edit in
// place a new size or modification time.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// NewStore returns the Store of the host file at path. Nothing is read yet.
func NewStore(path string) *Store { return &Store{path: path} }

// Path returns the host file's path.
func (s *Store) Path() string { return s.path }

// String returns the path, for messages.
func (s *Store) String() string { return s.path }

// idOf returns the version of the file at path, the zero fileID if it cannot be read.
func idOf(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

func (s *Store) saw(id fileID) {
	s.mu.Lock()
	s.seen = id
	s.mu.Unlock()
}

// Read returns the file's usable entries in file order, and a warning for each malformed
// line (as Read does). It takes no lock: a writer replaces the file in one rename.
func (s *Store) Read() ([]Entry, []error, error) {
	// The version is taken before the text: if the file is replaced in between, the next
	// change notice rereads it, rather than a change going unnoticed.
	id := idOf(s.path)
	f, warn, err := Read(s.path)
	if err != nil {
		return nil, nil, err
	}
	s.saw(id)
	return f.Entries(), warn, nil
}

// Add adds counts[name] to the count of the entry named name (saturating at 2^64-1), for
// every name the file has an entry for, in one locked read-modify-write (Update), and
// returns the entries as written. A name the file has no entry for is left out, not
// appended: a host removed from the file stays out of rotation; the caller decides what
// becomes of its count. The lock is waited for until ctx ends; then the error matches
// ErrLocked and nothing is written.
func (s *Store) Add(ctx context.Context, counts map[string]uint64) ([]Entry, error) {
	var written []Entry
	err := update(ctx, s.path, false, func(f *File) error {
		present := make(map[string]bool)
		for _, e := range f.Entries() {
			present[e.Name] = true
		}
		for name, n := range counts {
			if present[name] && n > 0 {
				f.Add(name, n)
			}
		}
		written = f.Entries()
		return nil
	}, func(path string) { s.saw(idOf(path)) }, nil)
	if err != nil {
		return nil, err
	}
	return written, nil
}

// Watch calls changed, from a goroutine of its own, soon after the file may have changed,
// until ctx ends; a change that this Store made itself (Add), or read already (Read),
// calls nothing. It watches the file's directory rather than the file, because every
// write replaces the file with a new one (a new inode, renamed over the old). The error
// says why the watch cannot start (no inotify instance left, the directory is gone).
func (s *Store) Watch(ctx context.Context, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", s.path, err)
	}
	// A symbolic link is followed to the file that is replaced; a change of the link
	// itself is seen in its own directory.
	names := map[string]bool{filepath.Clean(s.path): true}
	if real := resolve(s.path); real != s.path {
		names[filepath.Clean(real)] = true
	}
	dirs := map[string]bool{}
	for name := range names {
		dirs[filepath.Dir(name)] = true
	}
	for dir := range dirs {
		if err := w.Add(dir); err != nil {
			w.Close()
			return fmt.Errorf("watching %s: %w", dir, err)
		}
	}
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if names[filepath.Clean(ev.Name)] && s.changedSinceSeen() {
					changed()
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
				// An overflowed event queue: something may have changed.
				changed()
			}
		}
	}()
	return nil
}

// changedSinceSeen reports whether the file is not the version last read or written here.
func (s *Store) changedSinceSeen() bool {
	id := idOf(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	return id != s.seen
}
