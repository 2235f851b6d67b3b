package main

import (
	"context"
	"errors"
	"testing"

	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/cli/mantest"
)

// --help lists exactly the flags tcppipe defines, and the man page documents exactly the
// options --help lists. (parse, not run: run's stdout must be a file, for splice.)
func TestManPage(t *testing.T) {
	var help mantest.Help
	if _, err := parse(context.Background(), []string{"--help"}, &help, func(string) string { return "" }); !errors.Is(err, cli.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	mantest.CheckHelp(t, &help, "../../docs/man/tcppipe.1")
}
