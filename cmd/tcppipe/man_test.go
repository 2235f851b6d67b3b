package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"shd-tcp-tools/internal/cli/mantest"
)

// The man page documents exactly the options --help lists.
func TestManPage(t *testing.T) {
	out, err := os.Create(filepath.Join(t.TempDir(), "help"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if code := run(context.Background(), []string{"--help"}, os.Stdin, out, io.Discard, func(string) string { return "" }); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	help, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	mantest.Check(t, string(help), "../../docs/man/tcppipe.1")
}
