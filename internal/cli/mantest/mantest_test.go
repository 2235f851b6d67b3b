package mantest

import (
	"reflect"
	"testing"
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
