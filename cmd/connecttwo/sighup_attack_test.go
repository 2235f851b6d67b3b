package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackSIGHUPStorm: a SIGHUP storm (to listentwo and connecttwo in turn, one after
// another until the clients are done, at most 5,000; the secret file replaced by a copy
// of itself every 50) while 8 clients at once, 3 times each, relay 128 KiB each way through a tunnel with --secret-file, links over
// IPv6 loopback, clients over IPv4. A reread must lose nothing: every client's echo is
// whole (SHA-256), no link is refused, both programs go on and stop with status 0.
func TestAttackSIGHUPStorm(t *testing.T) {
	bins := tunneltest.Build(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("storm secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
	relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links, "--secret-file", secret)
	relay.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--pool", "4", "--secret-file", secret)
	relay.Log.WaitFor(t, `link #\d+ up `, 4, testkit.Timeout)

	stormed, done := make(chan error, 1), make(chan struct{})
	sent := 0
	go func() {
		for i := range 5000 {
			select {
			case <-done:
				stormed <- nil
				return
			default:
			}
			sent = i + 1
			p := relay
			if i%2 == 1 {
				p = agent
			}
			if i%50 == 0 { // the file replaced, as an editor or a deploy does
				tmp := filepath.Join(dir, "secret.new")
				if err := os.WriteFile(tmp, []byte("storm secret\n"), 0o600); err != nil {
					stormed <- err
					return
				}
				if err := os.Rename(tmp, secret); err != nil {
					stormed <- err
					return
				}
			}
			if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
				stormed <- fmt.Errorf("SIGHUP %d: %w", i, err)
				return
			}
		}
		stormed <- nil
	}()
	var wg sync.WaitGroup
	for seed := range uint64(8) {
		wg.Go(func() {
			for round := range uint64(3) {
				if err := testkit.EchoTrip(clients, 100*seed+round, 128<<10, 20*time.Second, true); err != nil {
					t.Errorf("client %d, round %d, during the SIGHUP storm: %v", seed, round, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-stormed; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d SIGHUPs; %d and %d rereads logged", sent, relay.Log.Count(`reread`), agent.Log.Count(`reread`))
	for _, p := range []*testkit.Proc{relay, agent} {
		if n := p.Log.Count(`refus|failed|error`); n > 0 {
			t.Errorf("%d lines of refusals, failures or errors during the storm:\n%s", n, testkit.Tail(p.Log.String(), 20))
		}
	}
	agent.Stop(t, syscall.SIGTERM, 10*time.Second)
	relay.Stop(t, syscall.SIGTERM, 10*time.Second)
}
