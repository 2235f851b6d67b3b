package cli

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// No engine imports this package: the packages under internal/ take values and return
// plain errors and warnings, and only cmd/* (and cli's own subpackages) turn them into
// flags, messages and exit statuses.
func TestNoEngineImportsCLI(t *testing.T) {
	const self = "shd-tcp-tools/internal/cli"
	root := filepath.Join("..")
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(path)
		if d.IsDir() {
			if rel == "../cli" || strings.HasPrefix(rel, "../cli/") || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == self {
				t.Errorf("%s imports %s: return a plain error (or a type of your own) and let cmd/* decide the exit status", rel, self)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked under internal/; is the walk wrong?", checked)
	}
}
