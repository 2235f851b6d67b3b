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
