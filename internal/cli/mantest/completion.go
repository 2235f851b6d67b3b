package mantest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// updateCompletions makes CheckCompletions write the completion files instead of
// comparing them: go test ./cmd/... -run TestManPage -args -update-completions
var updateCompletions = flag.Bool("update-completions", false, "write contrib/completion/ from the flag sets")

// helpOption is the long option of an option line's term and the placeholder of its
// value, if any: "-s, --source [ADDR:]PORT  listen..." gives "source", "[ADDR:]PORT".
var helpOption = regexp.MustCompile(`^ {2,8}(?:-[A-Za-z0-9], )?--([A-Za-z0-9-]+)(?: (\S+))?(?:  +(.*))?$`)

// An opt is one flag as the completions offer it.
type opt struct {
	short, long   string
	value         string // the placeholder of its value ("FILE", "SECS"); "" for a switch
	desc          string // the first line of its description in --help
	repeatable    bool
	completesFile bool
}

// opts reads fs's flags, with the placeholders and descriptions that help gives them.
func opts(fs *pflag.FlagSet, help string) []opt {
	values, descs := map[string]string{}, map[string]string{}
	last := "" // the option whose description a continuation line goes on with
	for _, line := range strings.Split(help, "\n") {
		if m := helpOption.FindStringSubmatch(line); m != nil {
			values[m[1]], descs[m[1]], last = m[2], m[3], m[1]
			continue
		}
		if text := strings.TrimSpace(line); last != "" && strings.HasPrefix(line, "          ") && text != "" {
			descs[last] = strings.TrimSpace(descs[last] + " " + text)
			continue
		}
		last = ""
	}
	for name, d := range descs {
		descs[name] = clause(d)
	}
	var out []opt
	fs.VisitAll(func(f *pflag.Flag) {
		o := opt{short: f.Shorthand, long: f.Name, desc: descs[f.Name], repeatable: strings.HasSuffix(f.Value.Type(), "Array")}
		if f.NoOptDefVal == "" { // a flag that takes a value
			o.value = values[f.Name]
			if o.value == "" {
				o.value = strings.ToUpper(f.Value.Type())
			}
			o.completesFile = o.value == "FILE"
		}
		out = append(out, o)
	})
	return out
}

// parenthetical is an aside in a description, which a completion menu leaves out.
var parenthetical = regexp.MustCompile(` \([^()]*\)`)

// clause returns what a completion menu has room for of a description: its first
// clause (up to "; " or ". "), without asides in parentheses, and at most 72 bytes, cut
// at ": " or else at a word.
func clause(d string) string {
	for parenthetical.MatchString(d) {
		d = parenthetical.ReplaceAllString(d, "")
	}
	for _, sep := range []string{"; ", ". "} {
		if i := strings.Index(d, sep); i >= 0 {
			d = d[:i]
		}
	}
	if len(d) > 72 {
		if i := strings.Index(d, ": "); i >= 0 {
			d = d[:i]
		} else if i := strings.LastIndex(d[:72], " "); i >= 0 {
			d = d[:i]
		}
	}
	return strings.TrimSuffix(d, ".")
}

// BashCompletion returns a bash completion script for fs's tool: its options after "-",
// file names after an option whose value is a FILE and as arguments, nothing after the
// other options that take a value.
func BashCompletion(fs *pflag.FlagSet, help string) string {
	var all, files, values []string
	for _, o := range opts(fs, help) {
		names := []string{"--" + o.long}
		if o.short != "" {
			names = append([]string{"-" + o.short}, names...)
		}
		all = append(all, names...)
		switch {
		case o.completesFile:
			files = append(files, names...)
		case o.value != "":
			values = append(values, names...)
		}
	}
	fn := "_shd_" + strings.ReplaceAll(fs.Name(), "-", "_")
	var b strings.Builder
	fmt.Fprintf(&b, "# bash completion for %s (shd-tcp-tools), generated from its flags and --help by its\n", fs.Name())
	fmt.Fprintf(&b, "# tests: go test ./cmd/%s -run TestManPage -args -update-completions. Do not edit.\n", fs.Name())
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n")
	b.WriteString("\tcase $prev in\n")
	if len(files) > 0 {
		fmt.Fprintf(&b, "\t%s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", strings.Join(files, "|"))
	}
	if len(values) > 0 {
		fmt.Fprintf(&b, "\t%s) COMPREPLY=(); return ;;\n", strings.Join(values, "|"))
	}
	b.WriteString("\tesac\n")
	b.WriteString("\tcase $cur in\n")
	fmt.Fprintf(&b, "\t-*) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(all, " "))
	b.WriteString("\t*) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n")
	b.WriteString("\tesac\n")
	b.WriteString("}\n")
	fmt.Fprintf(&b, "complete -F %s %s\n", fn, fs.Name())
	return b.String()
}

// ZshCompletion returns a zsh completion function (_TOOL, for a directory in $fpath) for
// fs's tool, with _arguments: each option with its description, its value's placeholder,
// and file names where the value is a FILE.
func ZshCompletion(fs *pflag.FlagSet, help string) string {
	// In _arguments, "]" ends an explanation and ":" a message unless quoted.
	explain := strings.NewReplacer(`'`, `'\''`, `]`, `\]`)
	message := strings.NewReplacer(`'`, `'\''`, `:`, `\:`)
	var b strings.Builder
	fmt.Fprintf(&b, "#compdef %s\n", fs.Name())
	fmt.Fprintf(&b, "# zsh completion for %s (shd-tcp-tools), generated from its flags and --help by its\n", fs.Name())
	fmt.Fprintf(&b, "# tests: go test ./cmd/%s -run TestManPage -args -update-completions. Do not edit.\n", fs.Name())
	b.WriteString("_arguments -s -S \\\n")
	for _, o := range opts(fs, help) {
		arg := ""
		if o.value != "" {
			action := " "
			if o.completesFile {
				action = "_files"
			}
			arg = ":" + message.Replace(o.value) + ":" + action
		}
		rest := "[" + explain.Replace(o.desc) + "]" + arg + "'"
		switch {
		case o.short != "" && o.repeatable:
			fmt.Fprintf(&b, "\t'*'{-%s,--%s}'%s \\\n", o.short, o.long, rest)
		case o.short != "":
			fmt.Fprintf(&b, "\t'(-%s --%s)'{-%s,--%s}'%s \\\n", o.short, o.long, o.short, o.long, rest)
		case o.repeatable:
			fmt.Fprintf(&b, "\t'*--%s%s \\\n", o.long, rest)
		default:
			fmt.Fprintf(&b, "\t'--%s%s \\\n", o.long, rest)
		}
	}
	b.WriteString("\t'*:file:_files'\n")
	return b.String()
}

// CheckCompletions fails the test unless contrib/completion/bash/TOOL and
// contrib/completion/zsh/_TOOL under root are what BashCompletion and ZshCompletion make
// of fs and help now; with -update-completions it writes them.
func CheckCompletions(t testing.TB, fs *pflag.FlagSet, help, root string) {
	t.Helper()
	for _, f := range []struct{ path, want string }{
		{filepath.Join(root, "contrib", "completion", "bash", fs.Name()), BashCompletion(fs, help)},
		{filepath.Join(root, "contrib", "completion", "zsh", "_"+fs.Name()), ZshCompletion(fs, help)},
	} {
		if *updateCompletions {
			if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.path, []byte(f.want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(f.path)
		switch {
		case err != nil:
			t.Errorf("%v: generate it with go test ./cmd/%s -run TestManPage -args -update-completions", err, fs.Name())
		case string(got) != f.want:
			t.Errorf("%s is not in step with %s's flags and --help: regenerate it with go test ./cmd/%s -run TestManPage -args -update-completions", f.path, fs.Name(), fs.Name())
		}
	}
}
