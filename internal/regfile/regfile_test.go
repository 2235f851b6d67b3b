package regfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestOpen: a regular file (and a link to one) opens and reads; a FIFO nobody writes, a
// device and a directory are refused at once, with errors that say so.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("file", link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, link} {
		f, err := Open(path)
		if err != nil {
			t.Fatalf("Open(%s): %v", path, err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil || string(b) != "text\n" {
			t.Errorf("reading %s: %q, %v", path, b, err)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want error
	}{{fifo, ErrNotRegular}, {"/dev/zero", ErrNotRegular}, {dir, syscall.EISDIR}} {
		done := make(chan error, 1)
		go func() {
			f, err := Open(tc.path)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, tc.want) {
				t.Errorf("Open(%s) = %v, want %v", tc.path, err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%s) still waits after 5s", tc.path)
		}
	}
}
