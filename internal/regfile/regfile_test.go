package regfile

import (
	"context"
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

// TestOpenStream: a FIFO that nobody writes, or whose writer never closes, holds
// OpenStream and then the reads only until the context ends (open(2) of it without
// O_NONBLOCK would wait where no signal ends it); a writer that comes is read to its end;
// a regular file reads as Open's does, and a directory is refused.
func TestOpenStream(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Nobody writes: OpenStream waits, and ends with the context.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		f, err := OpenStream(ctx, fifo)
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("OpenStream of a FIFO nobody writes returned %v, want it to wait", err)
	case <-time.After(100 * time.Millisecond): // it waits (the cancel below is what ends it)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("OpenStream after the cancel = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OpenStream of a FIFO nobody writes still waits 2s after the cancel")
	}

	// A writer that writes and never closes: the bytes are read, then the read that
	// waits ends with the context.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	opened := make(chan *os.File, 1)
	go func() {
		f, err := OpenStream(ctx, fifo)
		if err != nil {
			t.Error(err)
		}
		opened <- f
	}()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("head")); err != nil {
		t.Fatal(err)
	}
	var f *os.File
	select {
	case f = <-opened:
	case <-time.After(5 * time.Second):
		t.Fatal("OpenStream does not return once the writer wrote")
	}
	if f == nil {
		t.FailNow()
	}
	defer f.Close()
	read := make(chan error, 1)
	var got []byte
	go func() {
		var err error
		got, err = io.ReadAll(f)
		read <- err
	}()
	time.AfterFunc(100*time.Millisecond, cancel)
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrDeadlineExceeded) || string(got) != "head" {
			t.Errorf("reading a FIFO whose writer never closes: %q, %v; want \"head\", a deadline error", got, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read of a FIFO whose writer never closes still waits 5s after the cancel")
	}
	w.Close()

	// A writer that writes and closes: read to the end.
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			w.Write([]byte("whole\n"))
			w.Close()
		}
	}()
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	g, err := OpenStream(ctx, fifo)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(g)
	g.Close()
	if err != nil || string(b) != "whole\n" {
		t.Errorf("a FIFO whose writer closes: %q, %v", b, err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if g, err = OpenStream(t.Context(), file); err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(g)
	g.Close()
	if err != nil || string(b) != "text\n" {
		t.Errorf("a regular file: %q, %v", b, err)
	}
	if _, err := OpenStream(t.Context(), dir); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("OpenStream(dir) = %v, want EISDIR", err)
	}
}
