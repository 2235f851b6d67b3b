package main

import (
	"bytes"
	"io"
	"testing"

	"shd-tcp-tools/internal/cli/mantest"
)

// The man page documents exactly the options --help lists.
func TestManPage(t *testing.T) {
	var help bytes.Buffer
	if code := run([]string{"--help"}, &help, io.Discard); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	mantest.Check(t, help.String(), "../../docs/man/connecttwo.1")
}
