package main

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// The real binaries against strangers on loopback, floods bounded in workers, connects and
// time. Each test logs the figures docs/tunnel.md quotes.

// clientThrough connects to addr from local ("" for any), moves n checksummed bytes both
// ways within 5 s, and returns how long the first echoed byte took to come back.
func clientThrough(t *testing.T, local, addr string, seed uint64, n int64) time.Duration {
	t.Helper()
	start := time.Now()
	c := testkit.DialFrom(t, local, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{'!'}); err != nil {
		t.Fatalf("client %d: %v", seed, err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("client %d from %q: no echo after %v: %v", seed, local, time.Since(start), err)
	}
	first := time.Since(start)
	testkit.RoundTrip(t, c, seed, n)
	return first
}

// startRelay runs listentwo on free loopback ports and returns it with its two addresses.
func startRelay(t *testing.T, bin string, args ...string) (p *testkit.Proc, clients, links string) {
	t.Helper()
	clients = "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links = "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	p = testkit.Start(t, bin, append([]string{"-s", clients, "-d", links}, args...)...)
	p.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)
	return p, clients, links
}

func writeSecret(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("flood test secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAgentJoinsDuringLinkFlood: while hundreds of connections from the agent's own source
// address are held on the link port and reopened as fast as they are closed, a connecttwo
// started during the flood joins within 2 s and its clients are served; the relay's
// descriptors stay bounded and the strangers are summarised, not logged one by one. The
// strangers are silent (the kernel keeps them for a second, then listentwo for two), send
// one byte that is not the opening, or the opening itself (public), and then nothing; the
// last two reach listentwo at once and crowd its room.
func TestAgentJoinsDuringLinkFlood(t *testing.T) {
	bins := tunneltest.Build(t)
	secret := writeSecret(t)
	for _, tc := range []struct {
		name         string
		workers      int
		send         string
		relay, agent []string
	}{
		{"secret and hellos, 200 silent", 200, "", []string{"--hello-dst", "--secret-file", secret}, []string{"--hello-from-src", "--secret-file", secret}},
		{"no secret, no hellos, 200 silent", 200, "", nil, nil},
		{"secret, 600 sending a byte", 600, "x", []string{"--secret-file", secret}, []string{"--secret-file", secret}},
		{"no secret, 300 sending the opening", 300, "SHD-LINK/2\n", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
			relay, clients, links := startRelay(t, bins["listentwo"], append([]string{"--wait", "5"}, tc.relay...)...)
			flood := tunneltest.StartFlood(t, "127.0.0.1", links, tc.workers, 200000, []byte(tc.send))
			// Start the agent when the strangers have reached listentwo (silent ones are
			// held by the kernel for about a second first) or are being closed.
			testkit.WaitUntil(t, testkit.Timeout, "the flood to reach listentwo", func() bool {
				return relay.FDs(t) >= 150 || flood.Dials.Load() >= 2*int64(tc.workers)
			})

			start := time.Now()
			agent := testkit.Start(t, bins["connecttwo"], append([]string{"-s", links, "-d", svc.Addr(), "--pool", "2"}, tc.agent...)...)
			agent.WaitLog(t, `link #\d+ up `, 2, testkit.Timeout)
			joined := time.Since(start)
			var slowest time.Duration
			for i := range 5 {
				slowest = max(slowest, clientThrough(t, "127.0.0.1", clients, uint64(i), 64<<10))
			}
			fds := relay.FDs(t)
			dials, held := flood.Dials.Load(), flood.MaxHeld.Load()
			flood.Stop()
			t.Logf("agent joined in %v; 5 clients served, slowest first byte %v; flood: %d connects, at most %d open at once; listentwo: %d descriptors",
				joined.Round(time.Millisecond), slowest.Round(time.Millisecond), dials, held, fds)
			if joined > 2*time.Second {
				t.Errorf("connecttwo joined %v after its start, during the flood; want within 2s", joined)
			}
			if fds > 256+40 {
				t.Errorf("listentwo holds %d descriptors during the flood, want at most 296", fds)
			}
			relay.Stop(t, syscall.SIGTERM, 5*time.Second)
			agent.Stop(t, syscall.SIGTERM, 5*time.Second)
			// Strangers are summarised: a bounded number of lines for thousands of connects.
			lines := strings.Count(relay.Log.String(), "\n")
			t.Logf("listentwo wrote %d log lines", lines)
			if lines > 60 {
				t.Errorf("listentwo wrote %d log lines for a flood of %d connects, want at most 60:\n%s", lines, dials, testkit.Tail(relay.Log.String(), 20))
			}
		})
	}
}

// TestSilentClientsDoNotTakeLinks: without hellos, clients that connect and never send do
// not take links. With --pool 2 and hundreds of silent clients held on the client port and
// reopened as they are closed (from the speakers' own address and from another), every
// client that speaks is served at once, and the silent ones cost bounded descriptors.
func TestSilentClientsDoNotTakeLinks(t *testing.T) {
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	relay, clients, links := startRelay(t, bins["listentwo"], "--wait", "3")
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--pool", "2")
	relay.Log.WaitFor(t, `link #\d+ up `, 2, testkit.Timeout)

	other := tunneltest.StartFlood(t, "127.0.0.2", clients, 300, 100000, nil)
	same := tunneltest.StartFlood(t, "127.0.0.1", clients, 100, 100000, nil)
	// Silent clients wait in the kernel for about a second; then listentwo takes them, and
	// pushes out 236 of those from 127.0.0.2 (beyond that source's 64) at once.
	testkit.WaitUntil(t, testkit.Timeout, "the flood to reach listentwo", func() bool {
		return other.Dials.Load() >= 300+100 && same.Dials.Load() >= 100
	})
	var slowest time.Duration
	for i := range 20 {
		local := "127.0.0.1"
		if i%2 == 1 {
			local = "127.0.0.3"
		}
		slowest = max(slowest, clientThrough(t, local, clients, uint64(i), 16<<10))
	}
	fds := relay.FDs(t)
	t.Logf("20 speaking clients served, slowest first byte %v; silent clients: %d connects, at most %d open at once; listentwo: %d descriptors",
		slowest.Round(time.Millisecond), other.Dials.Load()+same.Dials.Load(), other.MaxHeld.Load()+same.MaxHeld.Load(), fds)
	if slowest > time.Second {
		t.Errorf("a speaking client waited %v for its first byte back, want under 1s", slowest)
	}
	if fds > 2*64+40 {
		t.Errorf("listentwo holds %d descriptors for 400 silent clients from 2 addresses, want at most %d", fds, 2*64+40)
	}
	other.Stop()
	same.Stop()
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)
	lines := strings.Count(relay.Log.String(), "\n")
	t.Logf("listentwo wrote %d log lines", lines)
	if lines > 40+2*20 {
		t.Errorf("listentwo wrote %d log lines, want at most 80:\n%s", lines, testkit.Tail(relay.Log.String(), 20))
	}
}
