package main

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackSecretFileFIFO: --secret-file names a FIFO that nobody writes (a mistake, or
// a file an attacker with write access to its directory swapped). At the start, either
// program must refuse it at once (exit 1, one line) rather than wait in open(2), where
// SIGTERM could not end it. Swapped in later, a SIGHUP must keep the secret in use and say
// why, and a later SIGHUP, once a regular file is back, must take its new secret: a
// reread stuck on the FIFO took every later one with it.
func TestAttackSecretFileFIFO(t *testing.T) {
	bins := tunneltest.Build(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	free := func(host string) string {
		return "[" + host + "]:" + strconv.Itoa(testkit.FreePort(t, host))
	}
	for _, argv := range [][]string{
		{bins["listentwo"], "-s", free("127.0.0.1"), "-d", free("::1"), "--secret-file", fifo},
		{bins["connecttwo"], "-s", free("::1"), "-d", free("127.0.0.1"), "--secret-file", fifo},
	} {
		p := testkit.Start(t, argv[0], argv[1:]...)
		code, took := p.Exit(t, 5*time.Second)
		want := filepath.Base(argv[0]) + ": --secret-file " + fifo + ": not a regular file\n"
		if code != 1 || p.Log.String() != want {
			t.Errorf("%s with a FIFO for --secret-file: exit %d after %v, stderr %q; want 1, %q",
				filepath.Base(argv[0]), code, took.Round(time.Millisecond), p.Log.String(), want)
		}
	}

	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := testkit.Start(t, bins["listentwo"], "-s", free("127.0.0.1"), "-d", free("::1"), "--secret-file", secret)
	relay.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)
	if err := os.Rename(fifo, secret); err != nil {
		t.Fatal(err)
	}
	relay.Signal(t, syscall.SIGHUP)
	relay.Log.WaitFor(t, `rereading secret file `+secret+`: not a regular file; keeping the secret in use$`, 1, 5*time.Second)
	next := filepath.Join(dir, "next")
	if err := os.WriteFile(next, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, secret); err != nil {
		t.Fatal(err)
	}
	relay.Signal(t, syscall.SIGHUP)
	relay.Log.WaitFor(t, `reread secret file `+secret+`: links must prove the new secret from now on$`, 1, 5*time.Second)
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
}
