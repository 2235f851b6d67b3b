package mantest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"shd-tcp-tools/internal/cli"
)

func TestHelpOptions(t *testing.T) {
	help := `Usage: tool -s PORT [-x]

Options:
  -s, --source [ADDR:]PORT  listen here; see -q in the text, which is not an option line
  -i SECS                   every SECS
      --accept-proxy-timeout SECS
                            how long
  -a, --allow HOST|ADDR/PREFIX
  -                         not an option
Examples:
  tool -s 8080 --lazy
`
	want := []string{"--accept-proxy-timeout", "--allow", "--source", "-a", "-i", "-s"}
	if got := HelpOptions(help); !reflect.DeepEqual(got, want) {
		t.Fatalf("HelpOptions = %q, want %q", got, want)
	}
}

func TestPageOptions(t *testing.T) {
	page := `.SH SYNOPSIS
.B tool \-x
.SH OPTIONS
.TP
\fB\-s\fR, \fB\-\-source\fR \fI[ADDR:]PORT\fR
Listen, unlike \fB\-\-other\fR in the text.
.TP
.BR \-\-lazy
.TP
.B \-p
.SH FORM OPTIONS
.TP
\fB\-\-list\fR \fIFILE\fR
.SH EXAMPLES
.TP
\fB\-\-example\fR
`
	want := []string{"--lazy", "--list", "--source", "-p", "-s"}
	if got := PageOptions(page); !reflect.DeepEqual(got, want) {
		t.Fatalf("PageOptions = %q, want %q", got, want)
	}
}

func TestFlags(t *testing.T) {
	fs := pflag.NewFlagSet("tool", pflag.ContinueOnError)
	fs.StringP("source", "s", "", "")
	fs.Bool("lazy", false, "")
	fs.IntP("interval", "i", 0, "")
	want := []string{"--interval", "--lazy", "--source", "-i", "-s"}
	if got := Flags(fs); !reflect.DeepEqual(got, want) {
		t.Fatalf("Flags = %q, want %q", got, want)
	}
}

// A tool's run hands its flag set to a Help stdout (cli.FlagsReceiver), and CheckFlags
// finds a long form that --help leaves out, as tcppipe's --interval once was.
func TestCheckFlagsFindsAMissingLongForm(t *testing.T) {
	run := func(help string) *Help {
		var h Help
		fs := cli.NewFlagSet("tool", help, &h)
		fs.StringP("source", "s", "", "")
		fs.StringP("interval", "i", "", "")
		if err := fs.Parse([]string{"--help"}); !errors.Is(err, cli.ErrHelp) {
			t.Fatalf("--help: %v", err)
		}
		return &h
	}
	good := run("Options:\n  -s, --source PORT  where\n  -i, --interval SECS  how often\n  -h, --help  help\n  -v, --version  version\n")
	if good.Flags == nil {
		t.Fatal("no flag set handed over")
	}
	if rec := (&recorder{}); func() bool { CheckFlags(rec, good.Flags, good.String()); return rec.failed }() {
		t.Fatalf("CheckFlags failed a help that lists every flag: %q", rec.errs)
	}
	bad := run("Options:\n  -s, --source PORT  where\n  -i SECS  how often\n  -x  no such flag\n  -h, --help  help\n  -v, --version  version\n")
	rec := &recorder{}
	CheckFlags(rec, bad.Flags, bad.String())
	want := []string{"--interval is a flag of tool but --help does not list it", "-x is in --help but tool has no such flag"}
	if !reflect.DeepEqual(rec.errs, want) {
		t.Fatalf("CheckFlags errors = %q, want %q", rec.errs, want)
	}
}

// recorder is a testing.TB that keeps the errors reported to it.
type recorder struct {
	testing.TB
	failed bool
	errs   []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
