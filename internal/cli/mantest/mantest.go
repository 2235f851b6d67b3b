// Package mantest checks, in each tool's tests, that its man page (docs/man/TOOL.1)
// documents exactly the options its --help lists.
package mantest

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	// helpLine is an option line of --help: indented, starting with an option.
	helpLine = regexp.MustCompile(`^ {2,8}--?[A-Za-z0-9]`)
	// option is one option in an option term: "-s", "--source".
	option = regexp.MustCompile(`(?:^|[\s,\[(|])(--?[A-Za-z0-9][A-Za-z0-9-]*)`)
	// fonts are the roff font changes (\fB, \fI, \fR, \fP, \f(CW).
	fonts = regexp.MustCompile(`\\f(\(..|\[[^]]*\]|.)`)
)

// HelpOptions returns the options of help's option lines: every "-x" and "--long" in the
// term before the description (set apart by two or more spaces).
func HelpOptions(help string) []string {
	var opts []string
	for _, line := range strings.Split(help, "\n") {
		if !helpLine.MatchString(line) {
			continue
		}
		term := strings.TrimSpace(line)
		if i := strings.Index(term, "  "); i >= 0 {
			term = term[:i]
		}
		opts = append(opts, find(term)...)
	}
	return sortUniq(opts)
}

// PageOptions returns the options a man page (man(7) macros) documents: those named in
// the tag line after each .TP of its OPTIONS section (sections whose title has OPTIONS).
func PageOptions(page string) []string {
	var opts []string
	inOptions, tag := false, false
	for _, line := range strings.Split(page, "\n") {
		switch {
		case strings.HasPrefix(line, ".SH"):
			inOptions = strings.Contains(strings.ToUpper(line), "OPTIONS")
			tag = false
		case !inOptions:
		case strings.HasPrefix(line, ".TP"):
			tag = true
		case tag:
			text := strings.ReplaceAll(fonts.ReplaceAllString(line, ""), `\-`, "-")
			text = strings.TrimLeft(strings.TrimPrefix(strings.TrimPrefix(text, ".BI"), ".BR"), " ")
			text = strings.TrimPrefix(text, ".B ")
			opts = append(opts, find(strings.ReplaceAll(text, `"`, " "))...)
			tag = false
		}
	}
	return sortUniq(opts)
}

func find(term string) []string {
	var opts []string
	for _, m := range option.FindAllStringSubmatch(term, -1) {
		opts = append(opts, m[1])
	}
	return opts
}

func sortUniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// Check fails the test unless the man page at path documents every option that help lists
// and no other.
func Check(t testing.TB, help, path string) {
	t.Helper()
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the man page: %v", err)
	}
	inHelp, inPage := HelpOptions(help), PageOptions(string(page))
	if len(inHelp) == 0 {
		t.Fatalf("no options found in --help:\n%s", help)
	}
	for _, o := range inHelp {
		if !slices.Contains(inPage, o) {
			t.Errorf("%s is in --help but not in OPTIONS of %s", o, path)
		}
	}
	for _, o := range inPage {
		if !slices.Contains(inHelp, o) {
			t.Errorf("%s is in OPTIONS of %s but not in --help", o, path)
		}
	}
}

// CheckRun runs a tool's run function (args, stdout, stderr; the exit status) with
// --help and checks its output against the man page at path, as Check does.
func CheckRun(t testing.TB, run func(args []string, stdout, stderr io.Writer) int, path string) {
	t.Helper()
	var help bytes.Buffer
	if code := run([]string{"--help"}, &help, io.Discard); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	Check(t, help.String(), path)
}
