// Package mantest checks, in each tool's tests, that its --help lists exactly the flags
// the tool defines, that its man page (docs/man/TOOL.1) documents exactly the options
// its --help lists, and that README.md's section on the tool names every long option.
package mantest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
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

// Flags returns the options a flag set defines: "--name" for every flag, and "-x" for
// every shorthand.
func Flags(fs *pflag.FlagSet) []string {
	var opts []string
	fs.VisitAll(func(f *pflag.Flag) {
		opts = append(opts, "--"+f.Name)
		if f.Shorthand != "" {
			opts = append(opts, "-"+f.Shorthand)
		}
	})
	return sortUniq(opts)
}

// CheckFlags fails the test unless help's option lines name every option of fs, long
// and short forms alike, and no other.
func CheckFlags(t testing.TB, fs *pflag.FlagSet, help string) {
	t.Helper()
	defined, inHelp := Flags(fs), HelpOptions(help)
	for _, o := range defined {
		if !slices.Contains(inHelp, o) {
			t.Errorf("%s is a flag of %s but --help does not list it", o, fs.Name())
		}
	}
	for _, o := range inHelp {
		if !slices.Contains(defined, o) {
			t.Errorf("%s is in --help but %s has no such flag", o, fs.Name())
		}
	}
}

// Help is a stdout for a tool's --help: it keeps the text and the flag set the tool
// hands over (cli.FlagsReceiver).
type Help struct {
	bytes.Buffer
	Flags *pflag.FlagSet
}

// ReceiveFlags implements cli.FlagsReceiver.
func (h *Help) ReceiveFlags(fs *pflag.FlagSet) { h.Flags = fs }

// CheckReadme fails the test unless the README's section on fs's tool (from the "## "
// heading that has the tool's name as a word to the next "## " heading), or the section
// on what every tool shares (a "## " heading with "every tool" in it), names every long
// option of fs, --help and --version aside.
func CheckReadme(t testing.TB, fs *pflag.FlagSet, readme string) {
	t.Helper()
	text, err := os.ReadFile(readme)
	if err != nil {
		t.Fatalf("the README: %v", err)
	}
	section, in := "", false
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = slices.Contains(strings.Fields(strings.NewReplacer("`", " ", ",", " ").Replace(line)), fs.Name()) ||
				strings.Contains(line, "every tool")
		}
		if in {
			section += line + "\n"
		}
	}
	if section == "" {
		t.Fatalf("%s has no \"## \" section on %s", readme, fs.Name())
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == "version" {
			return
		}
		named := regexp.MustCompile(`--` + regexp.QuoteMeta(f.Name) + `([^A-Za-z0-9-]|$)`)
		if !named.MatchString(section) {
			t.Errorf("--%s is a flag of %s but %s's section on it does not name it", f.Name, fs.Name(), readme)
		}
	})
}

// CheckHelp checks what a tool printed for --help into h: that it lists exactly the
// tool's flags (CheckFlags), that the man page at path (docs/man/TOOL.1) documents
// exactly those options (Check), that README.md, two levels above the man page's
// directory, names every long option in its section on the tool (CheckReadme), and that
// the completion files under contrib/completion there are in step (CheckCompletions).
func CheckHelp(t testing.TB, h *Help, path string) {
	t.Helper()
	if h.Flags == nil {
		t.Fatalf("--help handed over no flag set: is its stdout the one given to cli.NewFlagSet?")
	}
	CheckFlags(t, h.Flags, h.String())
	Check(t, h.String(), path)
	root := filepath.Join(filepath.Dir(path), "..", "..")
	CheckReadme(t, h.Flags, filepath.Join(root, "README.md"))
	CheckCompletions(t, h.Flags, h.String(), root)
}

// CheckRun runs a tool's run function (args, stdout, stderr; the exit status) with
// --help and checks its output with CheckHelp.
func CheckRun(t testing.TB, run func(args []string, stdout, stderr io.Writer) int, path string) {
	t.Helper()
	var help Help
	if code := run([]string{"--help"}, &help, io.Discard); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	CheckHelp(t, &help, path)
}
