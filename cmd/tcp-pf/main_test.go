package main

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
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
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status": cmdStatus,
			"busy":   cmdBusy,
		},
	})
}

// cmdStatus runs "status N PROGRAM ARGS...": PROGRAM must exit with status N, and when N is
// not 0 print exactly one line on stderr.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("status: %v", err)
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
	if want != 0 {
		stderr := ts.ReadFile("stderr")
		if n := strings.Count(stderr, "\n"); n != 1 || !strings.HasSuffix(stderr, "\n") {
			ts.Fatalf("stderr has %d lines, want exactly one", n)
		}
	}
}

// cmdBusy runs "busy VAR": it listens on a loopback port for the rest of the script and
// sets $VAR to that port.
func cmdBusy(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: busy VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	ts.Defer(func() { ln.Close() })
	ts.Setenv(args[0], fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
}
