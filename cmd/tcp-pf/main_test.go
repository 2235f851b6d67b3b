package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"shd-tcp-tools/internal/testkit"
)

// TestMain makes the test binary double as tcp-pf: scripts and the process tests below run
// it as a separate program, with real signals and limits.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"tcp-pf": main})
}

// TestScripts runs testdata/*.txtar: usage, bad arguments and files, exit codes.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		Cmds:                cmds(),
	})
}

// cmds are testkit's script commands, with "status N" also checking that a failure
// prints exactly one line on stderr, and "busy VAR" for busyport.
func cmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	c := testkit.ScriptCmds()
	c["status"] = testkit.Status(func(stderr string, code int) string {
		if n := strings.Count(stderr, "\n"); code != 0 && (n != 1 || !strings.HasSuffix(stderr, "\n")) {
			return fmt.Sprintf("stderr has %d lines, want exactly one", n)
		}
		return ""
	})
	c["busy"] = c["busyport"]
	return c
}
