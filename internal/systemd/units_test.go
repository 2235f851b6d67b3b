package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The example units under contrib/systemd pass systemd-analyze verify (with the man pages
// their Documentation= names), and their sandboxing keeps systemd-analyze security's
// exposure at 1.6 or below (1.5 when written; loosening PrivateUsers, ProtectSystem and
// CapabilityBoundingSet of tcp-pf.service gives 1.9).
func TestExampleUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("checking the example units needs systemd-analyze (Debian package systemd): %v", err)
	}
	dir := t.TempDir()
	units, err := filepath.Glob("../../contrib/systemd/*")
	if err != nil || len(units) < 3 {
		t.Fatalf("example units: %v %v", units, err)
	}
	// verify wants the programs of ExecStart= to exist: stand-ins here.
	for _, prog := range []string{"tcp-pf", "connecttwo"} {
		if err := os.WriteFile(filepath.Join(dir, prog), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, u := range units {
		text, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text = []byte(strings.ReplaceAll(string(text), "/usr/local/bin/", dir+"/"))
		name := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(name, text, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	man := filepath.Join(dir, "man", "man1")
	if err := os.MkdirAll(man, 0o755); err != nil {
		t.Fatal(err)
	}
	pages, _ := filepath.Glob("../../docs/man/*.1")
	for _, p := range pages {
		abs, _ := filepath.Abs(p)
		if err := os.Symlink(abs, filepath.Join(man, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, names...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(dir, "man"), "SYSTEMD_LOG_LEVEL=notice")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	exposure := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, n := range names {
		if !strings.HasSuffix(n, ".service") {
			continue
		}
		out, _ := exec.Command(analyze, "security", "--offline=true", "--no-pager", n).CombinedOutput()
		m := exposure.FindSubmatch(out)
		if m == nil {
			t.Errorf("systemd-analyze security %s: no exposure level:\n%s", filepath.Base(n), out)
			continue
		}
		if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 1.6 {
			t.Errorf("%s: exposure %s, want at most 1.6", filepath.Base(n), m[1])
		}
		t.Logf("%s: exposure %s", filepath.Base(n), m[1])
	}
}
