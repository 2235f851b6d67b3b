package main

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackTLSFilesFIFO: --tls-key, --tls-cert (listentwo) or --tls-ca (connecttwo)
// naming a FIFO that nobody writes (a mistake, or a file swapped by someone with write
// access to the directory). Read with a blocking open(2), the start waits for a writer,
// where SIGTERM cannot end it; each program must refuse the file at once instead (exit 1,
// one line naming the flag), as it refuses a FIFO for --secret-file.
func TestAttackTLSFilesFIFO(t *testing.T) {
	bins := tunneltest.Build(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "relay.key")
	if out, err := exec.Command(bins["listentwo"], "--tls-key", key, "--print-pin").CombinedOutput(); err != nil {
		t.Fatalf("making a key: %v, %s", err, out)
	}
	free := func(host string) string {
		return "[" + host + "]:" + strconv.Itoa(testkit.FreePort(t, host))
	}
	for _, c := range []struct {
		flag string
		argv []string
	}{
		{"--tls-key", []string{bins["listentwo"], "-s", free("127.0.0.1"), "-d", free("::1"), "--tls-key", fifo}},
		{"--tls-key", []string{bins["listentwo"], "--tls-key", fifo, "--print-pin"}},
		{"--tls-cert", []string{bins["listentwo"], "-s", free("::1"), "-d", free("127.0.0.1"), "--tls-cert", fifo, "--tls-key", key}},
		{"--tls-ca", []string{bins["connecttwo"], "-s", free("::1"), "-d", free("127.0.0.1"), "--tls-ca", fifo, "--tls-name", "relay.example"}},
	} {
		p := testkit.Start(t, c.argv[0], c.argv[1:]...)
		code, took := p.Exit(t, 5*time.Second)
		want := filepath.Base(c.argv[0]) + ": " + c.flag + " " + fifo + ": not a regular file\n"
		if code != 1 || p.Log.String() != want {
			t.Errorf("%s with a FIFO for %s: exit %d after %v, stderr %q; want 1, %q",
				filepath.Base(c.argv[0]), c.flag, code, took.Round(time.Millisecond), p.Log.String(), want)
		}
	}
}
