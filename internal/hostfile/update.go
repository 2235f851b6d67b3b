package hostfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"shd-tcp-tools/internal/patherr"
	"shd-tcp-tools/internal/regfile"
)

// LockSuffix is appended to a host file's path to name its lock file.
const LockSuffix = ".lock"

// newFileMode is the mode asked for a host file (and a lock file) that Update creates;
// the kernel takes the umask off it, as for any file a shell command creates.
const newFileMode fs.FileMode = 0o666

// maxLinks is how many symbolic links resolve follows before it gives up, as the kernel.
const maxLinks = 40

// ErrLocked is matched by the error of a Store.Add that gave up waiting for the lock
// that another process holds.
var ErrLocked = errors.New("held by another process")

// lockPoll is how often update tries again for a lock that another process holds.
const lockPoll = 10 * time.Millisecond

// Read reads and parses the host file at path. It takes no lock: writers replace the file
// with a rename, so a reader always sees a complete old or new version. The error, for a
// file that cannot be read, names path ("reading hosts.txt: no such file or directory") and
// matches fs.ErrNotExist when the file is missing. The warnings are those of Parse.
func Read(path string) (*File, []error, error) {
	data, err := readRegular(path)
	if err != nil {
		return nil, nil, patherr.Wrap("reading", path, err)
	}
	f, warns := Parse(path, data)
	return f, warns, nil
}

// Update changes the host file at path under an exclusive lock: it locks the sidecar file
// path+".lock" (created if needed, never removed; blocking until other writers are done),
// reads and parses the file, and calls fn with it. A missing file is an empty File when
// create is true, and an error otherwise.
//
// If fn returns nil and changed the file, the new text replaces the old one atomically: it
// is written to a temporary file in the same directory, synced, given the old file's mode
// (0644 for a new file) and, where allowed, its owner, renamed over path, and the directory
// is synced. A crash at any point leaves the old or the new file, never a mix. If fn returns
// an error, Update returns it and the file is not touched.
//
// The lock is on a separate file because the data file's inode is replaced by every write:
// a lock held on it would not exclude a process that opened the new one. If path is a
// symbolic link, the file it points to is updated (or, for a dangling link and create,
// created) and the link kept.
//
// Once the rename has succeeded, Update reports success: a failure to sync the directory
// afterwards cannot be undone and must not make a caller apply its change a second time.
func Update(path string, create bool, fn func(*File) error) error {
	return update(context.Background(), path, create, fn, nil, nil)
}

// LockPatience is how long UpdateContext waits for a lock that another process holds
// before it calls its waiting function.
const LockPatience = time.Second

// UpdateContext is Update that waits for the lock only until ctx ends (a signal), then
// returns an error that matches ErrLocked and leaves the file alone. waiting, when not
// nil, is called once, on the caller's goroutine, with the lock file's path, when
// another process has held the lock for LockPatience: a lock holder that never lets go
// is waited for as long as ctx lasts, and the user is to know what for.
func UpdateContext(ctx context.Context, path string, create bool, fn func(*File) error, waiting func(lock string)) error {
	return update(ctx, path, create, fn, nil, waiting)
}

// LockPath is the lock file of the host file at path (FILE.lock, beside the file a link
// points to).
func LockPath(path string) string { return resolve(path) + LockSuffix }

// update is Update that waits for the lock only until ctx ends: then it returns an error
// that matches ErrLocked ("locking hosts.lock: held by another process") and leaves the
// file alone; with a ctx that never ends it blocks in flock(2), as Update does. locked,
// when not nil, runs at the end while the lock is still held, with the path as updated;
// waiting is UpdateContext's.
func update(ctx context.Context, path string, create bool, fn func(*File) error, locked func(path string), waiting func(lock string)) error {
	path = resolve(path)
	lk := flock.New(path+LockSuffix, flock.SetPermissions(newFileMode))
	if err := lock(ctx, lk, waiting); err != nil {
		return patherr.Wrap("locking", path+LockSuffix, err)
	}
	defer lk.Unlock()
	if locked != nil {
		defer locked(path)
	}

	var old fs.FileInfo
	data, err := readRegular(path)
	switch {
	case err == nil:
		if old, err = os.Stat(path); err != nil {
			return patherr.Wrap("reading", path, err)
		}
	case errors.Is(err, fs.ErrNotExist) && create:
	default:
		return patherr.Wrap("reading", path, err)
	}
	f, _ := Parse(path, data)
	if err := fn(f); err != nil {
		return err
	}
	if !f.Changed() && old != nil {
		return nil
	}
	return replace(path, f.Format(), old)
}

// MaxSize is the largest host file the tools read: some 500,000 entries. A larger file is
// not a host file put there by mistake (a disk image, a log): tcp-pf, which rereads and
// rewrites the whole file at every -i, held some 700 MB and took 13 s to stop with a
// 100 MB one.
const MaxSize = 16 << 20

// ErrTooLarge is matched by the error of reading a host file larger than MaxSize.
var ErrTooLarge = fmt.Errorf("larger than %d MiB, too large for a host file", MaxSize>>20)

// readRegular returns the content of the host file at path, which must be a regular file
// (regfile.Open: a FIFO or a device is refused, never waited for or read without end) of
// at most MaxSize bytes.
func readRegular(path string) ([]byte, error) {
	b, err := regfile.ReadFile(path, MaxSize)
	if errors.Is(err, regfile.ErrTooLarge) {
		return nil, ErrTooLarge
	}
	return b, err
}

// lock takes lk, blocking in flock(2) when ctx can never end, and trying every lockPoll
// until ctx ends otherwise, calling waiting (when not nil) once the lock was held for
// LockPatience.
func lock(ctx context.Context, lk *flock.Flock, waiting func(lock string)) error {
	if ctx.Done() == nil {
		return lk.Lock()
	}
	if ok, err := lk.TryLock(); ok || err != nil {
		return err
	}
	if waiting != nil {
		patient, cancel := context.WithTimeout(ctx, LockPatience)
		ok, err := lk.TryLockContext(patient, lockPoll)
		cancel()
		if ok || (err != nil && !errors.Is(err, context.DeadlineExceeded)) || ctx.Err() != nil {
			return lockResult(ok, err)
		}
		waiting(lk.Path())
	}
	ok, err := lk.TryLockContext(ctx, lockPoll)
	return lockResult(ok, err)
}

// lockResult is what lock returns for TryLockContext's answer: nil for the lock, ErrLocked
// for a context that ended first.
func lockResult(ok bool, err error) error {
	switch {
	case ok:
		return nil
	case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return ErrLocked
	}
	return err
}

// resolve follows symbolic links so that a link to a host file stays a link: it returns
// the path of the file the link chain ends at, which need not exist (a dangling link's
// target is where a new file goes). A path that is no link is returned as it is.
func resolve(path string) string {
	for range maxLinks {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return path
		}
		target, err := os.Readlink(path)
		if err != nil {
			return path
		}
		if !filepath.IsAbs(target) {
			// Not filepath.Join: its lexical ".." would be wrong below a linked directory.
			target = filepath.Dir(path) + string(filepath.Separator) + target
		}
		path = target
	}
	return path
}

// tempPrefix is the name prefix of the temporary files that replace path. Only the holder
// of path's lock creates them, so one found while holding the lock is a leftover of a
// writer that crashed.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// replace writes data to path atomically (see Update). old is the replaced file's info,
// whose mode and owner the new file takes; nil for a new file.
func replace(path string, data []byte, old fs.FileInfo) error {
	dir := filepath.Dir(path)
	removeStaleTemps(dir, tempPrefix(path))
	tmp, err := createTemp(dir, tempPrefix(path))
	if err != nil {
		return patherr.Wrap("writing", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return patherr.Wrap("writing", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return patherr.Wrap("writing", path, err)
	}
	if old != nil {
		if err := tmp.Chmod(old.Mode().Perm()); err != nil {
			return patherr.Wrap("writing", path, err)
		}
		chown(tmp, old)
	}
	if err := tmp.Close(); err != nil {
		return patherr.Wrap("writing", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	ok = true
	syncDir(dir)
	return nil
}

// createTemp creates a new file in dir named prefix and a random suffix, asking for
// newFileMode, so that the kernel applies the umask (os.CreateTemp asks for 0600).
func createTemp(dir, prefix string) (*os.File, error) {
	for range 100 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, newFileMode)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, errors.New("no unused temporary name")
}

// removeStaleTemps deletes temporary files left in dir by a writer that crashed. It is
// called with the lock held, so no live writer owns any of them.
func removeStaleTemps(dir, prefix string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// syncDir makes a rename in dir durable. Errors are ignored: the rename has happened.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
