package main

import (
	"testing"

	"shd-tcp-tools/internal/cli/mantest"
	"shd-tcp-tools/internal/least"
)

// The man page documents exactly the options --help lists.
func TestManPage(t *testing.T) { mantest.CheckRun(t, least.Main, "../../docs/man/tcppipe-least.1") }
