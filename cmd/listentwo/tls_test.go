package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// pinIn returns the pin that a listentwo log line "tls pin sha256/..." names.
func pinIn(t *testing.T, p *testkit.Proc) string {
	t.Helper()
	p.Log.WaitFor(t, `tls pin sha256/\S+$`, 1, testkit.Timeout)
	m := regexp.MustCompile(`(?m)tls pin (sha256/\S+)$`).FindStringSubmatch(p.Log.String())
	return m[1]
}

// TestTLSKeyFile runs the real binaries with a key file that does not exist yet: listentwo
// creates it with mode 0600 and logs its pin, connecttwo with that pin serves a client,
// and a restarted listentwo reuses the file (the same pin), so the running connecttwo
// gets its links back by itself and serves again.
func TestTLSKeyFile(t *testing.T) {
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	key := filepath.Join(t.TempDir(), "relay.key")
	clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
	start := func() *testkit.Proc {
		return testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links, "--hello-dst", "--tls-key", key)
	}
	relay := start()
	relay.Log.WaitFor(t, `created --tls-key `+regexp.QuoteMeta(key)+` \(mode 0600\) with a new key$`, 1, testkit.Timeout)
	pin := pinIn(t, relay)
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src", "--pool", "2", "--tls-pin", pin)
	relay.Log.WaitFor(t, `link #\d+ up `, 2, testkit.Timeout)
	c := testkit.Dial(t, clients)
	testkit.RoundTrip(t, c, 1, 1<<20)
	c.Close()
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
	agent.Log.WaitFor(t, `link #\d+ down .*: closed by listentwo`, 1, testkit.Timeout)

	relay = start()
	if got := pinIn(t, relay); got != pin {
		t.Fatalf("restarted with the same key file, listentwo logs pin %s, want %s", got, pin)
	}
	if strings.Contains(relay.Log.String(), "created") {
		t.Errorf("the key file was made again:\n%s", relay.Log.String())
	}
	relay.Log.WaitFor(t, `link #\d+ up `, 2, 40*time.Second) // connecttwo's backoff: up to 30 s
	c = testkit.Dial(t, clients)
	testkit.RoundTrip(t, c, 2, 1<<20)
	c.Close()
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)
}

// TestTLSIdleLinkMemory holds idle TLS links between the real binaries and reads both
// processes' resident memory: each idle link costs at most 64 KiB on each side, once the
// processes have given back what the handshakes used (each does 2 s after its last
// handshake). The baseline is the same programs holding one link, read the same way: the
// least RSS seen over the 3 s after its link came up; with many links, the check passes
// as soon as a reading is within the bound, and fails on the least seen in 10 s.
func TestTLSIdleLinkMemory(t *testing.T) {
	const links = 200
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	key := filepath.Join(t.TempDir(), "relay.key")
	measure := func(pool int, settled func(relayKiB, agentKiB int) bool, within time.Duration) (relayKiB, agentKiB int) {
		clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
		linkAddr := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
		relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", linkAddr, "--hello-dst", "--tls-key", key, "--max-links", strconv.Itoa(links+10))
		pin := pinIn(t, relay)
		agent := testkit.Start(t, bins["connecttwo"], "-s", linkAddr, "-d", svc.Addr(), "--hello-from-src", "--pool", strconv.Itoa(pool), "--tls-pin", pin)
		relay.Log.WaitFor(t, `link #\d+ up `, pool, 20*time.Second)
		agent.Log.WaitFor(t, `link #\d+ up `, pool, 20*time.Second)
		relayKiB, agentKiB = relay.RSS(t), agent.RSS(t)
		for end := time.Now().Add(within); !settled(relayKiB, agentKiB) && time.Now().Before(end); {
			time.Sleep(100 * time.Millisecond) // the reading's pace, not a synchronisation
			relayKiB, agentKiB = min(relayKiB, relay.RSS(t)), min(agentKiB, agent.RSS(t))
		}
		agent.Stop(t, syscall.SIGTERM, 5*time.Second)
		relay.Stop(t, syscall.SIGTERM, 5*time.Second)
		return relayKiB, agentKiB
	}
	r1, a1 := measure(1, func(int, int) bool { return false }, 3*time.Second)
	within := func(rN, aN int) bool { return float64(rN-r1)/(links-1) <= 64 && float64(aN-a1)/(links-1) <= 64 }
	rN, aN := measure(links, within, 10*time.Second)
	perRelay, perAgent := float64(rN-r1)/(links-1), float64(aN-a1)/(links-1)
	t.Logf("RSS with 1 idle TLS link: listentwo %d KiB, connecttwo %d KiB; with %d: %d KiB and %d KiB; per link: listentwo %.1f KiB, connecttwo %.1f KiB",
		r1, a1, links, rN, aN, perRelay, perAgent)
	if perRelay > 64 || perAgent > 64 {
		t.Errorf("an idle TLS link costs listentwo %.1f KiB and connecttwo %.1f KiB, want at most 64 each", perRelay, perAgent)
	}
}
