package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// fullPipe returns a pipe of 4 KiB whose buffer is full already: a stderr that nobody
// reads, filled before the process writes its first line.
func fullPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w = testkit.SmallPipe(t)
	if _, err := w.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// TestAttackStderrFullAtStart: listentwo --tls-key and connecttwo --tls-pin, each with a
// stderr that is full before it starts (a pipe that nobody reads). listentwo has a warning
// to give at its start (its key file can be read by other users): it must not hang in it
// (the warning waits at most a second), but listen within 3 s; connecttwo must bring its
// TLS link up, its lines dropped; a client must be served (64 KiB each way, SHA-256); and
// SIGTERM (listentwo) and SIGINT (connecttwo), sent together in the middle of a second
// client's 32 MiB echo, must end both with status 0 within 3 s (the log's drain at exit
// waits at most a second), and that client must see a reset after a prefix of its
// stream. Over IPv4.
func TestAttackStderrFullAtStart(t *testing.T) {
	bins := tunneltest.Build(t)
	key := filepath.Join(t.TempDir(), "relay.key")
	pin := printPin(t, bins["listentwo"], key)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	clientPort := testkit.FreePort(t, "127.0.0.1")
	clients := "127.0.0.1:" + strconv.Itoa(clientPort)
	links := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))

	_, rw := fullPipe(t)
	start := time.Now()
	relay := startWithStderr(t, rw, bins["listentwo"], "-s", clients, "-d", links, "--hello-dst", "--tls-key", key)
	relay.WaitListening(t, clientPort)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("listentwo took %v to listen, its stderr full", took)
	}
	_, aw := fullPipe(t)
	agent := startWithStderr(t, aw, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src",
		"--pool", "1", "--tls-pin", pin)
	if err := testkit.EchoTrip(clients, 1, 64<<10, 3*time.Second, true); err != nil {
		t.Fatalf("a client through the tunnel, both programs' stderr full: %v", err)
	}
	t.Logf("listening and a client served %v after the start", time.Since(start).Round(time.Millisecond))

	// A second client's 32 MiB echo, cut by the stop once 4 MiB came back.
	c := testkit.Dial(t, clients)
	_ = c.SetDeadline(time.Now().Add(testkit.Timeout))
	sendErr := make(chan error, 1)
	go func() {
		_, err := testkit.Send(c, 2, 32<<20)
		sendErr <- err
	}()
	back := testkit.NewDigester()
	if _, err := io.CopyN(back, c, 4<<20); err != nil {
		t.Fatalf("the first 4 MiB of the echo: %v", err)
	}
	stop := time.Now()
	relay.Signal(t, syscall.SIGTERM)
	agent.Signal(t, syscall.SIGINT)
	for _, p := range []*testkit.Proc{relay, agent} {
		code, _ := p.Exit(t, 10*time.Second)
		took := time.Since(stop)
		t.Logf("%s exited %d within %v of the signal", filepath.Base(p.Cmd.Path), code, took.Round(time.Millisecond))
		if code != 0 || took > 3*time.Second {
			t.Errorf("%s exited %d within %v of the signal, its stderr full; want 0 within 3s", filepath.Base(p.Cmd.Path), code, took)
		}
	}
	_, readErr := io.Copy(back, c)
	wErr := <-sendErr
	if got := back.Digest(); got != testkit.Expected(2, got.N) || got.N >= 32<<20 {
		t.Errorf("the cut client got %v back, not a strict prefix of what it sent", got)
	}
	if !errors.Is(readErr, syscall.ECONNRESET) && !errors.Is(wErr, syscall.ECONNRESET) {
		t.Errorf("the cut client's read ended with %v and its send with %v; want a reset", readErr, wErr)
	}
}
