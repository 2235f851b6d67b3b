package testkit

import (
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// Build compiles the module's commands (import paths such as
// "shd-tcp-tools/cmd/listentwo") into one temporary directory of the test and returns
// the path of each binary by its command's name ("listentwo"). The directory, returned
// under the key "", can be put first in a child's PATH.
func Build(t testing.TB, cmds ...string) map[string]string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building the tools needs the go command: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goTool, append([]string{"build", "-o", dir + string(filepath.Separator)}, cmds...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bins := map[string]string{"": dir}
	for _, c := range cmds {
		bins[path.Base(c)] = filepath.Join(dir, path.Base(c))
	}
	return bins
}
