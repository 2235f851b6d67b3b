package main

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"shd-tcp-tools/internal/testkit"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"listentwo": main})
}

// TestScripts runs the CLI scripts in testdata: help, usage errors and exit statuses, and
// the running program stopped by SIGINT and SIGTERM.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata", Cmds: testkit.ScriptCmds(), RequireExplicitExec: true})
}
