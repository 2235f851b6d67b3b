package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackSIGHUPMidTLSTransfer: both programs of a TLS tunnel with --secret-file; in
// the middle of a client's 16 MiB echo (once 2 MiB came back) the secret changes in both
// files and both get SIGHUP. The transfer must go on whole (length and SHA-256, the
// half-close passed on); its link, which proved the old secret, is closed when its session
// ends (`the secret changed`), and a next client is served on a link that proved the new
// one. Then SIGTERM to each with a SIGHUP right behind it (a reload asked during the
// stop): both exit 0 within a second. Over IPv4.
func TestAttackSIGHUPMidTLSTransfer(t *testing.T) {
	bins := tunneltest.Build(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "relay.key")
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("old secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links, "--hello-dst", "--tls-key", key, "--secret-file", secret)
	relay.Log.WaitFor(t, `tls pin sha256/\S+$`, 1, testkit.Timeout)
	pin := regexp.MustCompile(`(?m)tls pin (sha256/\S+)$`).FindStringSubmatch(relay.Log.String())[1]
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src", "--pool", "1",
		"--tls-pin", pin, "--secret-file", secret)
	relay.Log.WaitFor(t, `link #\d+ up `, 1, testkit.Timeout)

	const size = 16 << 20
	c := testkit.Dial(t, clients)
	_ = c.SetDeadline(time.Now().Add(testkit.Timeout))
	sent := make(chan error, 1)
	go func() {
		_, err := testkit.Send(c, 3, size)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	back := testkit.NewDigester()
	if _, err := io.CopyN(back, c, 2<<20); err != nil {
		t.Fatalf("the first 2 MiB of the echo: %v", err)
	}
	if err := os.WriteFile(secret, []byte("new secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay.Signal(t, syscall.SIGHUP)
	agent.Signal(t, syscall.SIGHUP)
	// The client reads nothing meanwhile, so the echo waits: both reloads come mid-transfer.
	for _, p := range []*testkit.Proc{relay, agent} {
		p.Log.WaitFor(t, `reread secret file `, 1, testkit.Timeout)
	}
	if _, err := io.Copy(back, c); err != nil {
		t.Fatalf("the rest of the echo after the SIGHUPs: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending after the SIGHUPs: %v", err)
	}
	if got, want := back.Digest(), testkit.Expected(3, size); got != want {
		t.Fatalf("the echo through the SIGHUPs: %v, want %v", got, want)
	}
	relay.Log.WaitFor(t, `close #1 .* up=16777216 .* down=16777216 .* end="client closed"$`, 1, testkit.Timeout)
	relay.Log.WaitFor(t, `link #1 down \S+: the secret changed$`, 1, testkit.Timeout)
	relay.Log.WaitFor(t, `link #\d+ up `, 2, 10*time.Second) // a link that proved the new secret
	if err := testkit.EchoTrip(clients, 4, 64<<10, testkit.Timeout, true); err != nil {
		t.Fatalf("a client after the reload: %v", err)
	}

	for _, p := range []*testkit.Proc{agent, relay} {
		p.Signal(t, syscall.SIGTERM)
		p.Signal(t, syscall.SIGHUP)
		code, took := p.Exit(t, 10*time.Second)
		if code != 0 || took > time.Second {
			t.Errorf("%s exited %d in %v after SIGTERM and SIGHUP; want 0 within 1s", filepath.Base(p.Cmd.Path), code, took)
		}
	}
}
