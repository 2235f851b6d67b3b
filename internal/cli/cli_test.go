package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/patherr"
)

func TestReport(t *testing.T) {
	cases := []struct {
		err  error
		code int
		out  string
	}{
		{nil, ExitOK, ""},
		{ErrHelp, ExitOK, ""},
		{Usagef("bad port %q", "x"), ExitUsage, "tool: bad port \"x\"\n"},
		{fmt.Errorf("wrapped: %w", Usagef("u")), ExitUsage, "tool: wrapped: u\n"},
		{errors.New("two\nlines"), ExitFailure, "tool: two lines\n"},
	}
	for _, c := range cases {
		var b bytes.Buffer
		if got := Report(&b, "tool", c.err); got != c.code || b.String() != c.out {
			t.Errorf("Report(%v) = %d %q, want %d %q", c.err, got, b.String(), c.code, c.out)
		}
	}
}

func TestFlagSet(t *testing.T) {
	var out bytes.Buffer
	fs := NewFlagSet("tool", "HELP\n", &out)
	if err := fs.Parse([]string{"--help"}); !errors.Is(err, ErrHelp) || out.String() != "HELP\n" {
		t.Fatalf("--help: %v %q", err, out.String())
	}
	out.Reset()
	fs = NewFlagSet("tool", "HELP\n", &out)
	if err := fs.Parse([]string{"-v"}); !errors.Is(err, ErrHelp) || !strings.HasPrefix(out.String(), "tool (shd-tcp-tools) ") {
		t.Fatalf("-v: %v %q", err, out.String())
	}
	fs = NewFlagSet("tool", "HELP\n", &out)
	if err := fs.Parse([]string{"--nope"}); Code(err) != ExitUsage {
		t.Fatalf("unknown flag: %v", err)
	}
}

func TestSeconds(t *testing.T) {
	var s Seconds
	if err := s.Set("0.25"); err != nil || s.D != 250*time.Millisecond {
		t.Fatalf("0.25: %v %v", s.D, err)
	}
	for _, bad := range []string{"-1", "x", "NaN", "Inf", "1e300"} {
		if err := s.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	// Below a nanosecond the duration is zero, and the text says what was typed.
	if err := s.Set("1e-10"); err != nil || s.D != 0 || s.String() != "1e-10" {
		t.Fatalf("1e-10: D=%v String=%q err=%v", s.D, s.String(), err)
	}
	if d := (&Seconds{D: 1500 * time.Millisecond}).String(); d != "1.5" {
		t.Fatalf("default shown as %q, want 1.5", d)
	}
}

// TestNumberFlagWords: a whole-number flag given something else says so in words, not
// with strconv's "strconv.ParseInt: parsing ...: invalid syntax".
func TestNumberFlagWords(t *testing.T) {
	for _, c := range []struct{ arg, want string }{
		{"x", `invalid argument "x" for "--pool" flag: not a whole number`},
		{"1.5", `invalid argument "1.5" for "--pool" flag: not a whole number`},
		{"99999999999999999999", `invalid argument "99999999999999999999" for "--pool" flag: out of range`},
	} {
		var out bytes.Buffer
		fs := NewFlagSet("tool", "HELP\n", &out)
		var n int
		fs.IntVar(&n, "pool", 2, "")
		err := fs.Parse([]string{"--pool", c.arg})
		if Code(err) != ExitUsage || err.Error() != c.want {
			t.Errorf("--pool %s: %v (exit %d); want %q, exit 2", c.arg, err, Code(err), c.want)
		}
	}
}

// A service's context ends on SIGTERM, not on SIGHUP: each SIGHUP is one reload request,
// and those that come while one waits merge into it, also after SIGTERM. A second SIGTERM
// closes hurry and does not kill (a third would). SIGPIPE is ignored from then on.
// The signals go to this test process, whose handlers are installed before each is sent.
func TestServiceContext(t *testing.T) {
	ctx, hurry, reload, cancel := ServiceContext(context.Background())
	defer cancel()
	if !signal.Ignored(syscall.SIGPIPE) {
		t.Error("SIGPIPE is not ignored")
	}
	for range 3 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-reload:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload request after SIGHUP")
	}
	if ctx.Err() != nil {
		t.Fatal("SIGHUP ended the context")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		OnReload(ctx, reload, func() {}) // takes a request that may still be waiting
	}()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
	<-done // OnReload returns with the context
	// While the tool stops (tcp-pf's --grace), a SIGHUP is still a request, not a kill.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reload:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload request after SIGHUP once stopping")
	}
	select {
	case <-hurry:
		t.Fatal("hurry closed before a second SIGTERM")
	default:
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil { // this process lives on
		t.Fatal(err)
	}
	select {
	case <-hurry:
	case <-time.After(10 * time.Second):
		t.Fatal("hurry not closed after a second stop signal")
	}
}

// A tool with nothing to reload (tcppipe) stops on SIGHUP as on SIGTERM.
func TestSignalContextStopsOnSIGHUP(t *testing.T) {
	ctx, cancel := SignalContext(context.Background())
	defer cancel()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not end the context")
	}
}

func TestUsageIfAndWarn(t *testing.T) {
	empty := errors.New("empty")
	wrapped := fmt.Errorf("--secret-file f: %w", empty)
	if got := Code(UsageIf(wrapped, empty)); got != ExitUsage {
		t.Errorf("UsageIf(error wrapping the target): exit %d, want %d", got, ExitUsage)
	}
	other := errors.New("permission denied")
	if got := UsageIf(other, empty); got != other || Code(got) != ExitFailure {
		t.Errorf("UsageIf(other error) = %v (exit %d), want it unchanged (exit %d)", got, Code(got), ExitFailure)
	}
	if UsageIf(nil, empty) != nil {
		t.Error("UsageIf(nil) is not nil")
	}
	var b strings.Builder
	Warn(&b, "tool", nil)
	Warn(&b, "tool", errors.New("f is readable by every user"))
	if b.String() != "tool: warning: f is readable by every user\n" {
		t.Errorf("Warn wrote %q", b.String())
	}
}

// TestFileError: an engine's error about a file it was given takes the flag's name; an
// error about another file, or of another kind, stays as it is.
func TestFileError(t *testing.T) {
	engine := patherr.Wrap("secret file", "s.txt", fs.ErrNotExist)
	got := FileError("--secret-file", "s.txt", engine)
	if want := "--secret-file s.txt: file does not exist"; got == nil || got.Error() != want {
		t.Errorf("FileError = %v, want %q", got, want)
	}
	if !errors.Is(got, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", got)
	}
	if got := FileError("--tls-cert", "other.pem", engine); got != engine {
		t.Errorf("FileError for another path = %v, want the error as it was", got)
	}
	plain := errors.New("not a file error")
	if got := FileError("--secret-file", "s.txt", plain); got != plain {
		t.Errorf("FileError(plain) = %v, want it as it was", got)
	}
	if FileError("--secret-file", "s.txt", nil) != nil {
		t.Error("FileError(nil) is not nil")
	}
}
