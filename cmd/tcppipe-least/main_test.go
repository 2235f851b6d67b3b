package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/least"
	"shd-tcp-tools/internal/testkit"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"tcppipe-least": main,
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			// A -race binary otherwise waits a second before exiting, for every command.
			e.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			return nil
		},
		Cmds: testkit.ScriptCmds(),
	})
}

func TestParse(t *testing.T) {
	tests := []struct {
		args []string
		want least.Config
	}{
		{[]string{"f"}, least.Config{Mode: least.ModeLeast, N: 1, File: "f"}},
		{[]string{"-n", "3", "f"}, least.Config{Mode: least.ModeLeast, N: 3, File: "f"}},
		{[]string{"f", "--number=2"}, least.Config{Mode: least.ModeLeast, N: 2, File: "f"}},
		{[]string{"--list", "f"}, least.Config{Mode: least.ModeList, N: 1, File: "f"}},
		{[]string{"--add", "h:80", "5", "f"}, least.Config{Mode: least.ModeAdd, N: 1, Host: "h:80", Bytes: 5, File: "f"}},
		{[]string{"--set", "::1", "18446744073709551615", "f"}, least.Config{Mode: least.ModeSet, N: 1, Host: "::1", Bytes: math.MaxUint64, File: "f"}},
		{[]string{"--remove", "[::1]:22", "f"}, least.Config{Mode: least.ModeRemove, N: 1, Host: "[::1]:22", File: "f"}},
		{[]string{"h", "--add", "0", "f"}, least.Config{Mode: least.ModeAdd, N: 1, Host: "h", File: "f"}},
	}
	for _, tt := range tests {
		got, err := parse(tt.args, &bytes.Buffer{})
		if err != nil || got != tt.want {
			t.Errorf("parse(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}

	bad := [][]string{
		{},
		{"a", "b"},
		{"-n", "0", "f"},
		{"-n", "-2", "f"},
		{"-n", "two", "f"},
		{"-n", "1", "--list", "f"},
		{"--list", "--remove", "h", "f"},
		{"--add", "h", "f"},
		{"--add", "h", "1", "f", "g"},
		{"--add", "h", "1k", "f"},
		{"--add", "h", "18446744073709551616", "f"},
		{"--set", "h:0", "1", "f"},
		{"--set", "[::1]", "1", "f"},
		{"--remove", "a b", "f"},
		{"--remove", "h", ""},
		{"--nope", "f"},
	}
	for _, args := range bad {
		_, err := parse(args, &bytes.Buffer{})
		if cli.Code(err) != cli.ExitUsage {
			t.Errorf("parse(%q) = %v, want a usage error", args, err)
		}
	}

	var out bytes.Buffer
	if _, err := parse([]string{"--help"}, &out); !errors.Is(err, cli.ErrHelp) || !strings.Contains(out.String(), "FILE.lock") {
		t.Errorf("--help: %v, %q", err, out.String())
	}
}

func TestMainStatuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	if code, _, errs := run("--add", "b", "2", path); code != 0 || errs != "" {
		t.Fatalf("--add: %d %q", code, errs)
	}
	if code, _, _ := run("--add", "a", "1", path); code != 0 {
		t.Fatalf("--add: %d", code)
	}
	if code, out, _ := run(path); code != 0 || out != "a\n" {
		t.Errorf("least: %d %q", code, out)
	}
	if code, out, _ := run("--list", path); code != 0 || out != "a 1\nb 2\n" {
		t.Errorf("--list: %d %q", code, out)
	}
	if code, _, errs := run("--remove", "c", path); code != 1 || errs != "tcppipe-least: "+path+": no entry for c\n" {
		t.Errorf("--remove absent: %d %q", code, errs)
	}
	if code, _, errs := run("--set", "c", "x", path); code != 2 || !strings.HasPrefix(errs, "tcppipe-least: BYTES") {
		t.Errorf("bad BYTES: %d %q", code, errs)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "b 2\na 1\n" {
		t.Errorf("file = %q, %v", data, err)
	}
}
