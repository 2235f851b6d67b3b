package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/testkit"
)

// binPath is the tcppipe binary that TestMain builds with go build, for the tests that
// need a real process (signals, exit statuses, stdin and stdout redirected to files).
var binPath string

// TestMain builds the binary once, then runs the tests. testscript.Main also lets the
// scripts run "tcppipe" as a command: the test binary itself, entering main.
func TestMain(m *testing.M) {
	testscript.Main(buildFirst{m}, map[string]func(){"tcppipe": main})
}

type buildFirst struct{ m *testing.M }

func (b buildFirst) Run() int {
	dir, err := os.MkdirTemp("", "tcppipe-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "tcppipe")
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool(), append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tcppipe: %v\n%s", err, out)
		return 1
	}
	return b.m.Run()
}

// goraceNoSleep is $GORACE with the race runtime's one-second sleep at exit turned off:
// under -race, the binaries the tests run would each take a second longer to exit.
func goraceNoSleep() string {
	return strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
}

// goTool is the go command of the toolchain running the tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// TestScripts runs testdata/*.txtar. Each script gets:
//   - $PORT: a listener on 127.0.0.1 that nothing should reach; "noconn" checks it;
//   - $REFUSED: a port that refuses connections on every IPv4 loopback address;
//   - "exits CODE PROG ARGS...": run PROG, require exit status CODE, and require stderr
//     to be tcppipe's own lines (each starting "tcppipe: "; exactly one for a usage error),
//     never a Go panic or stack trace.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("GORACE", goraceNoSleep())
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			env.Defer(func() { ln.Close() })
			env.Values["listener"] = ln
			env.Setenv("PORT", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
			p, closeRefused, err := refusedPort()
			if err != nil {
				return err
			}
			env.Defer(closeRefused)
			env.Setenv("REFUSED", strconv.Itoa(p))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":  testkit.Status(checkStderr),
			"noconn": cmdNoconn,
		},
	})
}

// checkStderr returns what is wrong with a run's stderr, or "".
func checkStderr(stderr string, code int) string {
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		return "stderr holds a Go panic or stack trace"
	}
	if code == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if !strings.HasSuffix(stderr, "\n") {
		return "stderr does not end with a newline"
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "tcppipe: ") {
			return fmt.Sprintf("stderr line %q does not start with \"tcppipe: \"", l)
		}
	}
	if code == 2 && len(lines) != 1 {
		return fmt.Sprintf("a usage error printed %d lines; want one", len(lines))
	}
	return ""
}

func cmdNoconn(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: noconn")
	}
	ln := ts.Value("listener").(*net.TCPListener)
	// Every command before this one has exited: a connection it made is in the queue now.
	ln.SetDeadline(time.Now())
	defer ln.SetDeadline(time.Time{})
	if c, err := ln.Accept(); err == nil {
		c.Close()
		ts.Fatalf("a connection reached $PORT")
	}
}

// refusedPort binds a socket on 0.0.0.0 without listening: connections to the port on any
// IPv4 address are refused for as long as it stays open.
func refusedPort() (int, func(), error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, err
	}
	closeFd := func() { unix.Close(fd) }
	if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
		closeFd()
		return 0, nil, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		closeFd()
		return 0, nil, err
	}
	return sa.(*unix.SockaddrInet4).Port, closeFd, nil
}
