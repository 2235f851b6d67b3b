// Package cli holds what the five command-line tools share at their edge: exit codes,
// one-line error reporting, GNU-style flag sets with -h/--help and -v/--version, flag value
// types for ports, rates and seconds, and the signal handling: a context that ends on
// SIGINT or SIGTERM, reload requests on SIGHUP, and SIGPIPE ignored.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"shd-tcp-tools/internal/patherr"
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

// UsageIf wraps err as a UsageError when it wraps one of targets (a mistake in what the user
// gave, such as an empty secret file), and returns it unchanged otherwise.
func UsageIf(err error, targets ...error) error {
	for _, t := range targets {
		if errors.Is(err, t) {
			return AsUsage(err)
		}
	}
	return err
}

// Warn prints a warning that does not stop the tool (say, a key file every user may read)
// to w as "tool: warning: ...", as Printf does. A nil warning prints nothing.
func Warn(w io.Writer, tool string, warning error) {
	if warning != nil {
		Printf(w, "%s: warning: %v\n", tool, warning)
	}
}

// LineWait bounds how long Printf waits for its line to be written: a stderr that nobody
// reads (a full pipe) must not hold a tool at its start or its exit, where a signal could
// not end the wait either. The tools' event lines never wait (internal/connlog).
const LineWait = time.Second

// Printf writes a line the tool says itself (a warning at its start, the error it exits
// with) to w, and waits for the write at most LineWait. A line that waits longer is given
// up: its write goes on, on a goroutine of its own, and lands if the reader comes back.
func Printf(w io.Writer, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.WriteString(w, line)
	}()
	t := time.NewTimer(LineWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// FileError gives an engine's error or warning about a file the flag's name: when err is
// about the file at path (an *fs.PathError for path, as patherr.Wrap makes them:
// "secret file PATH: reason"), it becomes "FLAG PATH: reason", the file named as the user
// gave it. Any other error, and nil, comes back as it is.
func FileError(flag, path string, err error) error {
	if pe, ok := err.(*fs.PathError); ok && pe.Path == path {
		return patherr.Wrap(flag, path, err)
	}
	return err
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

// Report prints err to w as one line prefixed with the tool's name, as Printf does, and
// returns the exit status for it. Nothing is printed for nil or ErrHelp.
func Report(w io.Writer, tool string, err error) int {
	code := Code(err)
	if code != ExitOK {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		Printf(w, "%s: %s\n", tool, msg)
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

// FlagsReceiver is implemented by a stdout that wants the tool's flag set when the help
// is printed to it. The tests that keep --help and the man pages in step with the flags
// a tool defines take them this way (internal/cli/mantest), through the tool's own run
// function and without a hook in its main.
type FlagsReceiver interface {
	ReceiveFlags(fs *pflag.FlagSet)
}

// Parse parses args. It returns ErrHelp after printing help or the version, and a
// UsageError for anything pflag rejects.
func (f *FlagSet) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			f.printHelp()
			return ErrHelp
		}
		return AsUsage(numberWords(err))
	}
	if *f.showHlp {
		f.printHelp()
		return ErrHelp
	}
	if *f.showVer {
		fmt.Fprintf(f.stdout, "%s (shd-tcp-tools) %s\n", f.tool, Version)
		return ErrHelp
	}
	return nil
}

func (f *FlagSet) printHelp() {
	fmt.Fprint(f.stdout, f.help)
	if r, ok := f.stdout.(FlagsReceiver); ok {
		r.ReceiveFlags(f.FlagSet)
	}
}

// Address names a flag whose value is an address written as one word, and that word's
// form for messages: "HOST:PORT" or "[ADDR:]PORT".
type Address struct{ Flag, Form string }

// NoArgs returns nil when no argument is left after the flags, and otherwise a usage
// error naming the first one. When that argument is a port and one of addrs (given by
// long name) holds only a host, as in "-d 127.0.0.1 80" (netcat's and tcppipe's way of
// writing it), the error says that this tool takes the address as one word, and how.
func (f *FlagSet) NoArgs(addrs ...Address) error {
	if f.NArg() == 0 {
		return nil
	}
	arg := f.Arg(0)
	if isPort(arg) {
		for _, a := range addrs {
			fl := f.Lookup(a.Flag)
			if fl == nil || !fl.Changed || !hostOnly(fl.Value.String()) {
				continue
			}
			name := "--" + fl.Name
			if fl.Shorthand != "" {
				name = "-" + fl.Shorthand
			}
			return Usagef("unexpected argument %q: %s takes %s as one word: %s %s",
				arg, name, a.Form, name, net.JoinHostPort(fl.Value.String(), arg))
		}
	}
	return Usagef("unexpected argument %q; see --help", arg)
}

// isPort reports whether s reads as a TCP port: digits, or a service name ("ssh").
func isPort(s string) bool {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		return true
	}
	_, err := net.LookupPort("tcp", s)
	return err == nil && !strings.HasPrefix(s, "-")
}

// hostOnly reports whether an address flag's value is a host without a port: an IP
// literal, or a word with no colon that is not a port number.
func hostOnly(v string) bool {
	if _, err := netip.ParseAddr(v); err == nil {
		return true
	}
	return v != "" && !strings.Contains(v, ":") && strings.Trim(v, "0123456789") != ""
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

// SignalContext returns a context that is cancelled on the first SIGINT, SIGTERM or
// SIGHUP: for a tool with nothing to reread (tcppipe), a hangup is one more way to say
// stop. After that first signal the default handling is restored, so a second one kills.
// SIGPIPE is ignored from then on (see ignoreSIGPIPE).
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, _, _, cancel := signalContext(parent, false)
	return ctx, cancel
}

// ServiceContext is SignalContext for the long-running tools (tcp-pf, listentwo,
// connecttwo): SIGINT and SIGTERM cancel the context, and each SIGHUP is a request, on
// reload, to reread the tool's files and go on (see OnReload). A request waits there
// until taken, and SIGHUPs that come meanwhile are merged into it. SIGHUP stays handled,
// and requests keep coming, until cancel is called, also after ctx ended: a hangup while
// the tool stops does not kill it, and can still reload it.
//
// A second SIGINT or SIGTERM closes hurry: the stop under way is to be carried out now
// (tcp-pf ends its --grace). It does not kill: a kill would leave the kernel to close the
// relayed connections with FINs, so that a cut transfer looks complete, and the counts
// not yet written would be lost. After it the default handling is back, so a third one
// kills.
func ServiceContext(parent context.Context) (ctx context.Context, hurry <-chan struct{}, reload <-chan struct{}, cancel context.CancelFunc) {
	return signalContext(parent, true)
}

// OnReload calls f for each request on reload until ctx ends. Run it on its own goroutine
// once the engine that f reloads exists; a request made before then is kept for it. To
// reload while the tool stops, give it a ctx that ends when the engine has stopped.
func OnReload(ctx context.Context, reload <-chan struct{}, f func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			f()
		}
	}
}

func signalContext(parent context.Context, reloads bool) (context.Context, <-chan struct{}, <-chan struct{}, context.CancelFunc) {
	ignoreSIGPIPE()
	ctx, cancel := context.WithCancel(parent)
	stop := make(chan os.Signal, 1)
	hup := make(chan os.Signal, 1)
	reload := make(chan struct{}, 1)
	hurry := make(chan struct{})
	if reloads {
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		signal.Notify(hup, syscall.SIGHUP)
	} else {
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	}
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(stop)
		for {
			select {
			case <-stop:
				switch {
				case ctx.Err() == nil:
					cancel()
					if !reloads {
						// The default handling is back, so a second signal kills.
						signal.Stop(stop)
						stop = nil
					}
				default: // a second one; SIGHUPs still come as requests
					close(hurry)
					signal.Stop(stop) // the default handling is back: a third one kills
					stop = nil
				}
			case <-hup:
				select {
				case reload <- struct{}{}:
				default: // one is waiting already
				}
			case <-quit:
				return
			}
		}
	}()
	return ctx, hurry, reload, func() {
		cancel()
		close(quit)
		<-done
		signal.Stop(hup)
	}
}

// ignoreSIGPIPE makes a write to a pipe whose reader is gone fail with EPIPE instead of
// killing the process. Go kills a program that writes to a broken pipe on stdout or
// stderr unless SIGPIPE is ignored or notified (os/signal, "SIGPIPE"); for our tools a
// log reader that went away (tcp-pf 2>&1 | head -1) must stop the logging, not the
// service and its counts. Other descriptors get EPIPE in any case.
func ignoreSIGPIPE() { signal.Ignore(syscall.SIGPIPE) }
