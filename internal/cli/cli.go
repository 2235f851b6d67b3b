// Package cli holds what the five command-line tools share at their edge: exit codes,
// one-line error reporting, GNU-style flag sets with -h/--help and -v/--version, flag value
// types for ports, rates and seconds, and a context that ends on SIGINT or SIGTERM.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// Version is the version every tool prints for -v/--version.
const Version = "0.1.0"

// Exit statuses shared by every tool.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // a runtime failure: connect, bind, read a file, transfer cut short
	ExitUsage   = 2 // a usage error: unknown option, missing or malformed argument
)

// UsageError marks an error in what the user typed; it makes a tool exit with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// AsUsage wraps err as a UsageError (nil stays nil).
func AsUsage(err error) error {
	if err == nil {
		return nil
	}
	var u *UsageError
	if errors.As(err, &u) {
		return err
	}
	return &UsageError{Err: err}
}

// ErrHelp is returned by Parse when -h/--help or -v/--version was handled: the caller exits 0.
var ErrHelp = errors.New("help requested")

// Code returns the exit status for err: ExitOK for nil or ErrHelp, ExitUsage for a
// UsageError, ExitFailure otherwise.
func Code(err error) int {
	var u *UsageError
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return ExitOK
	case errors.As(err, &u):
		return ExitUsage
	default:
		return ExitFailure
	}
}

// Report prints err to w as one line prefixed with the tool's name and returns the exit
// status for it. Nothing is printed for nil or ErrHelp.
func Report(w io.Writer, tool string, err error) int {
	code := Code(err)
	if code != ExitOK {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(w, "%s: %s\n", tool, msg)
	}
	return code
}

// FlagSet is a GNU-style flag set that knows its tool's name and help text.
type FlagSet struct {
	*pflag.FlagSet
	tool    string
	help    string
	stdout  io.Writer
	showVer *bool
	showHlp *bool
}

// NewFlagSet returns a flag set for tool whose --help prints help (a whole usage text) to
// stdout. -h/--help and -v/--version are defined on it.
func NewFlagSet(tool, help string, stdout io.Writer) *FlagSet {
	fs := pflag.NewFlagSet(tool, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	f := &FlagSet{FlagSet: fs, tool: tool, help: help, stdout: stdout}
	f.showHlp = fs.BoolP("help", "h", false, "print this help and exit")
	f.showVer = fs.BoolP("version", "v", false, "print the version and exit")
	return f
}

// Parse parses args. It returns ErrHelp after printing help or the version, and a
// UsageError for anything pflag rejects.
func (f *FlagSet) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(f.stdout, f.help)
			return ErrHelp
		}
		return AsUsage(numberWords(err))
	}
	if *f.showHlp {
		fmt.Fprint(f.stdout, f.help)
		return ErrHelp
	}
	if *f.showVer {
		fmt.Fprintf(f.stdout, "%s (shd-tcp-tools) %s\n", f.tool, Version)
		return ErrHelp
	}
	return nil
}

// numberWords rewords pflag's error for a number flag given something else: strconv's
// text ("strconv.ParseInt: parsing "x": invalid syntax") becomes a person's words, the
// flag and the value staying as pflag names them.
func numberWords(err error) error {
	var iv *pflag.InvalidValueError
	var ne *strconv.NumError
	if !errors.As(err, &iv) || !errors.As(err, &ne) {
		return err
	}
	words := "not a whole number"
	switch {
	case errors.Is(ne.Err, strconv.ErrRange):
		words = "out of range"
	case strings.HasPrefix(ne.Func, "ParseFloat"):
		words = "not a number"
	case strings.HasPrefix(ne.Func, "ParseBool"):
		words = "not true or false"
	}
	name := "--" + iv.GetFlag().Name
	if sh := iv.GetFlag().Shorthand; sh != "" {
		name = "-" + sh + ", " + name
	}
	return fmt.Errorf("invalid argument %q for %q flag: %s", iv.GetValue(), name, words)
}

// OnSignal calls fn, from a goroutine of its own, each time one of sigs arrives, until ctx
// ends; while it runs, those signals no longer have their default effect (SIGHUP's is to
// end the process).
func OnSignal(ctx context.Context, fn func(), sigs ...os.Signal) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ch:
				fn()
			case <-ctx.Done():
				return
			}
		}
	}()
}

// SignalContext returns a context that is cancelled on the first SIGINT or SIGTERM.
// After that first signal the default handling is restored, so a second one kills.
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		defer signal.Stop(ch)
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
