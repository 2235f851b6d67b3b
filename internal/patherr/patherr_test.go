package patherr

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWrap(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	_, openErr := os.Open(missing)
	_, readDirErr := os.ReadFile(dir)
	plain := errors.New("disk on fire")
	cases := []struct {
		name string
		path string
		err  error
		want string
		is   error
	}{
		{"open", missing, openErr, "reading " + missing + ": no such file or directory", fs.ErrNotExist},
		{"read of a directory", dir, readDirErr, "reading " + dir + ": is a directory", nil},
		{"wrapped path error", missing, errors.Join(openErr), "reading " + missing + ": no such file or directory", fs.ErrNotExist},
		{"no path error", missing, plain, "reading " + missing + ": disk on fire", plain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Wrap("reading", c.path, c.err)
			if got.Error() != c.want {
				t.Errorf("Wrap = %q, want %q", got, c.want)
			}
			if c.is != nil && !errors.Is(got, c.is) {
				t.Errorf("errors.Is(%v, %v) = false", got, c.is)
			}
		})
	}
	if Wrap("reading", missing, nil) != nil {
		t.Error("Wrap(nil) is not nil")
	}
}

// TestWrapAgain: a Wrap of Wrap's error names the file with the second WHAT only, as
// cmd/* does when it gives an engine's file error the flag's name.
func TestWrapAgain(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	_, openErr := os.Open(missing)
	engine := Wrap("secret file", missing, openErr)
	if want := "secret file " + missing + ": no such file or directory"; engine.Error() != want {
		t.Fatalf("engine's error %q, want %q", engine, want)
	}
	got := Wrap("--secret-file", missing, engine)
	if want := "--secret-file " + missing + ": no such file or directory"; got.Error() != want {
		t.Errorf("Wrap again = %q, want %q", got, want)
	}
	if !errors.Is(got, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", got)
	}
}
