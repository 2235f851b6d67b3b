package testkit

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RandomData returns n pseudo-random bytes, different on every call.
func RandomData(n int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], uint64(time.Now().UnixNano()))
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// WriteFile writes data to a new file name in a temporary directory of the test and
// returns its path.
func WriteFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Open opens path for reading, closed when the test ends.
func Open(t testing.TB, path string) *os.File {
	t.Helper()
	return kept(t, path, os.Open)
}

// Create creates (or truncates) path for writing, closed when the test ends.
func Create(t testing.TB, path string) *os.File {
	t.Helper()
	return kept(t, path, os.Create)
}

// kept opens path with open, or fails the test, and closes the file when the test ends.
func kept(t testing.TB, path string, open func(string) (*os.File, error)) *os.File {
	t.Helper()
	f, err := open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// CheckSame fails the test unless got and want have the same length and SHA-256.
func CheckSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %x", what,
			len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// SmallPipe returns a pipe whose buffer holds only 4 KiB (one page, the least Linux
// allows), for a process's stderr that fills at once when nobody reads it. Both ends are
// closed when the test ends.
func SmallPipe(t testing.TB) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	return r, w
}
