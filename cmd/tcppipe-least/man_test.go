package main

import (
	"testing"

	"shd-tcp-tools/internal/cli/mantest"
)

// The man page documents exactly the options --help lists.
func TestManPage(t *testing.T) { mantest.CheckRun(t, run, "../../docs/man/tcppipe-least.1") }
