package mantest

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

const toolHelp = `Usage: tool [OPTION]...

Options:
  -s, --source [ADDR:]PORT  listen on PORT (on every address); more
                            text on the next line
  -a, --allow HOST          serve only clients from HOST; repeatable
      --insert FILE         send FILE first
      --lazy                pass half-closes on
`

func toolFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("tool", pflag.ContinueOnError)
	fs.SortFlags = false // as cli.NewFlagSet sets it: the order of --help
	fs.StringP("source", "s", "", "")
	fs.StringArrayP("allow", "a", nil, "")
	fs.String("insert", "", "")
	fs.Bool("lazy", false, "")
	return fs
}

// The completions offer each option, files after a FILE option, nothing after another
// option with a value, and the first clause of each description in zsh.
func TestCompletions(t *testing.T) {
	bash := BashCompletion(toolFlags(), toolHelp)
	for _, want := range []string{
		"\t--insert) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n",
		"\t-s|--source|-a|--allow) COMPREPLY=(); return ;;\n",
		"compgen -W '-s --source -a --allow --insert --lazy'",
		"complete -F _shd_tool tool\n",
	} {
		if !strings.Contains(bash, want) {
			t.Errorf("bash completion lacks %q:\n%s", want, bash)
		}
	}
	zsh := ZshCompletion(toolFlags(), toolHelp)
	for _, want := range []string{
		"#compdef tool\n",
		`'(-s --source)'{-s,--source}'[listen on PORT]:[ADDR\:]PORT: '`,
		`'*'{-a,--allow}'[serve only clients from HOST]:HOST: '`,
		`'--insert[send FILE first]:FILE:_files'`,
		`'--lazy[pass half-closes on]'`,
	} {
		if !strings.Contains(zsh, want) {
			t.Errorf("zsh completion lacks %q:\n%s", want, zsh)
		}
	}
}
