package main

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestLoopAcceptBacksOffOnEMFILE: a plain listentwo whose open-file limit is low (64,
// soft and hard, so Go cannot raise it) runs out of descriptors while clients hold links
// (clients over IPv4, links over IPv6). Its event loops' accept backs off with the one
// back-off's line instead of failing or spinning, listentwo keeps running, and once the
// clients are gone it serves a new client (its bytes echoed intact) and says it serves
// again.
func TestLoopAcceptBacksOffOnEMFILE(t *testing.T) {
	prlimit := testkit.NeedProgram(t, "prlimit")
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
	relay := testkit.Start(t, prlimit, "--nofile=64:64", "--", bins["listentwo"], "-s", clients, "-d", links)
	relay.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--pool", "2")
	agent.Log.WaitFor(t, `link #\d+ up`, 2, testkit.Timeout)

	// Each client sends a byte and holds its relay open: a client and a link in
	// listentwo, until the limit.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	deadline := time.Now().Add(testkit.Timeout)
	for relay.Log.Count(`out of descriptors or memory \(accept4: too many open files\): pausing accept`) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no back-off after %d clients held; listentwo:\n%s", len(held), relay.Log)
		}
		if len(held) < 200 {
			c, err := net.DialTimeout("tcp", clients, testkit.Timeout)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte{'x'}); err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		} else {
			time.Sleep(10 * time.Millisecond) // a poll's tick: the line is due within the pause
		}
	}
	if relay.Exited() {
		t.Fatalf("listentwo exited under EMFILE:\n%s", relay.Log)
	}
	t.Logf("backed off after %d clients held", len(held))
	for _, c := range held {
		c.Close()
	}
	held = nil
	start := time.Now()
	// Descriptors come back as the relays end; the next client is served.
	if err := testkit.EchoTrip(clients, 7, 256<<10, 2*testkit.Timeout, true); err != nil {
		t.Fatalf("client after the shortage: %v\nlistentwo:\n%s", err, relay.Log)
	}
	t.Logf("a client served %v after the clients left", time.Since(start).Round(time.Millisecond))
	relay.Log.WaitFor(t, `accepting (client|link)s: serving again after \d+ failures for lack of descriptors or memory$`, 1, testkit.Timeout)
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
}
