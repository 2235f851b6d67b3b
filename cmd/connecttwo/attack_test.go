package main

import (
	"errors"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// tlsTunnel runs the real listentwo (--tls-key) and connecttwo (--tls-pin, --pool 1) on
// host towards the service svc, and returns both, the clients' address and a restart of
// listentwo on the same ports and key.
func tlsTunnel(t *testing.T, bins map[string]string, host, svc string) (relay, agent *testkit.Proc, clients string, restart func() *testkit.Proc) {
	t.Helper()
	key := filepath.Join(t.TempDir(), "relay.key")
	clients = "[" + host + "]:" + strconv.Itoa(testkit.FreePort(t, host))
	links := "[" + host + "]:" + strconv.Itoa(testkit.FreePort(t, host))
	restart = func() *testkit.Proc {
		return testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links, "--hello-dst", "--tls-key", key)
	}
	relay = restart()
	relay.Log.WaitFor(t, `tls pin sha256/\S+$`, 1, testkit.Timeout)
	pin := regexp.MustCompile(`(?m)tls pin (sha256/\S+)$`).FindStringSubmatch(relay.Log.String())[1]
	agent = testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc, "--hello-from-src", "--pool", "1", "--tls-pin", pin)
	relay.Log.WaitFor(t, `link #\d+ up `, 1, testkit.Timeout)
	return relay, agent, clients, restart
}

// TestRelayKilledMidSession: listentwo killed (SIGKILL) while a client's session is in the
// middle of an upload over a TLS link. connecttwo must reset the service's connection (a
// cut, never a clean end that looks complete), log the link down, and serve again once
// listentwo is back, on both loopbacks.
func TestRelayKilledMidSession(t *testing.T) {
	bins := tunneltest.Build(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ends := make(chan testkit.ReadEnd, 4)
			sink := testkit.StartBackend(t, "["+host+"]:0", testkit.Sink(ends))
			relay, agent, clients, restart := tlsTunnel(t, bins, host, sink.Addr())
			c := testkit.Dial(t, clients)
			if _, err := c.Write(make([]byte, 256<<10)); err != nil {
				t.Fatal(err)
			}
			agent.Log.WaitFor(t, `open #1 `, 1, testkit.Timeout)
			relay.Signal(t, syscall.SIGKILL)
			<-relay.Done()
			select {
			case end := <-ends:
				if !errors.Is(end.Err, syscall.ECONNRESET) {
					t.Errorf("the service's connection ended with %v after %d bytes, want a reset", end.Err, end.N)
				}
			case <-time.After(testkit.Timeout):
				t.Fatal("the service's connection did not end after listentwo was killed")
			}
			relay = restart()
			agent.Log.WaitFor(t, `close #1 .* end="error: link closed"`, 1, testkit.Timeout)
			c.Close()
			relay.Log.WaitFor(t, `link #\d+ up `, 1, 40*time.Second) // connecttwo's backoff
			c = testkit.Dial(t, clients)
			if _, err := c.Write([]byte("after")); err != nil {
				t.Fatal(err)
			}
			_ = c.CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
			_, _ = io.Copy(io.Discard, c)
			select {
			case end := <-ends:
				if end.Err != io.EOF || end.N != 5 {
					t.Errorf("the next client's service connection: %d bytes, %v; want 5, a clean end", end.N, end.Err)
				}
			case <-time.After(testkit.Timeout):
				t.Fatal("the next client never reached the service")
			}
			agent.Stop(t, syscall.SIGTERM, 5*time.Second)
			relay.Stop(t, syscall.SIGTERM, 5*time.Second)
		})
	}
}

// TestStopWithTLSSessionsOpen: SIGTERM on either program while a client's session on a
// TLS link is open both ways. The client and the service must both see a reset (a cut
// never looks like a complete transfer), and the program exits 0 within a second.
func TestStopWithTLSSessionsOpen(t *testing.T) {
	bins := tunneltest.Build(t)
	for _, who := range []string{"listentwo", "connecttwo"} {
		t.Run(who, func(t *testing.T) {
			ends := make(chan testkit.ReadEnd, 4)
			sink := testkit.StartBackend(t, "[::1]:0", testkit.Sink(ends))
			relay, agent, clients, _ := tlsTunnel(t, bins, "::1", sink.Addr())
			c := testkit.Dial(t, clients)
			if _, err := c.Write(make([]byte, 64<<10)); err != nil {
				t.Fatal(err)
			}
			agent.Log.WaitFor(t, `open #1 `, 1, testkit.Timeout)
			p := map[string]*testkit.Proc{"listentwo": relay, "connecttwo": agent}[who]
			if took := p.Stop(t, syscall.SIGTERM, 5*time.Second); took > time.Second {
				t.Errorf("%s took %v to stop with a session open", who, took)
			}
			testkit.WantReset(t, c, ends, 64<<10, testkit.Timeout)
		})
	}
}
