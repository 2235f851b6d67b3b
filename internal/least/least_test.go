package least

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Run hands back a malformed line as a warning, names the hosts of the others, and keeps
// the line when it edits the file.
func TestRunWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("b 2\na b c\na 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	warns, err := Run(t.Context(), Config{Mode: ModeList, N: 1, File: path}, &out, nil)
	if err != nil || out.String() != "a 1\nb 2\n" {
		t.Fatalf("--list: %q, %v", out.String(), err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0].Error(), path+":2") {
		t.Errorf("--list warnings %v, want one naming %s:2", warns, path)
	}
	warns, err = Run(t.Context(), Config{Mode: ModeRemove, Host: "c", File: path}, &out, nil)
	if err == nil || !strings.Contains(err.Error(), "no entry for c") || len(warns) != 1 {
		t.Errorf("--remove absent: %v, warnings %v; want the error and the warning", err, warns)
	}
	if _, err := Run(t.Context(), Config{Mode: ModeAdd, Host: "a", Bytes: 5, File: path}, &out, nil); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "b 2\na b c\na 6\n" {
		t.Errorf("after --add: %q, %v", data, err)
	}
}
