package main

import (
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackSlowReaderTLS: a client of a TLS tunnel that reads nothing while the service
// floods its session (a download to a stalled or malicious reader), over IPv6 loopback.
// Both relays must hold a bounded amount of the flood (the session's flow control is
// TCP's, end to end), and another client meanwhile gets its 8 MiB echo through whole
// (SHA-256) at once. When the slow client reads again, its stream is whole.
func TestAttackSlowReaderTLS(t *testing.T) {
	bins := tunneltest.Build(t)
	const host = "::1"
	const flood = 7          // the stream seed the service floods with
	var flooded atomic.Int64 // bytes the service has sent into the flood
	svc := testkit.StartBackend(t, "["+host+"]:0", func(c *net.TCPConn) {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return
		}
		if first[0] != 'F' { // an echo
			if _, err := c.Write(first[:]); err == nil {
				_, _ = io.Copy(c, c)
				_ = c.CloseWrite()
			}
			return
		}
		src := testkit.NewStream(flood)
		buf := make([]byte, 64<<10)
		for {
			_, _ = io.ReadFull(src, buf)
			n, err := c.Write(buf)
			flooded.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	key := filepath.Join(t.TempDir(), "relay.key")
	clients := "[" + host + "]:" + strconv.Itoa(testkit.FreePort(t, host))
	links := "[" + host + "]:" + strconv.Itoa(testkit.FreePort(t, host))
	relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links, "--tls-key", key)
	relay.Log.WaitFor(t, `tls pin sha256/\S+$`, 1, testkit.Timeout)
	pin := regexp.MustCompile(`(?m)tls pin (sha256/\S+)$`).FindStringSubmatch(relay.Log.String())[1]
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--pool", "2", "--tls-pin", pin)
	relay.Log.WaitFor(t, `link #\d+ up `, 2, testkit.Timeout)
	rss0 := map[string]int{"listentwo": relay.RSS(t), "connecttwo": agent.RSS(t)}

	slow := testkit.Dial(t, clients)
	if _, err := slow.Write([]byte("F")); err != nil {
		t.Fatal(err)
	}
	// The flood fills every buffer on the way and stops there.
	seen, since := int64(-1), time.Now()
	testkit.WaitUntil(t, 10*time.Second, "the flood to stand still for 300 ms", func() bool {
		if n := flooded.Load(); n != seen {
			seen, since = n, time.Now()
		}
		return seen > 0 && time.Since(since) > 300*time.Millisecond
	})
	t.Logf("the flood stalled after %d KiB", seen>>10)

	// Another client beside the stalled one.
	start := time.Now()
	seed := uint64(9)
	for first := make([]byte, 1); ; seed++ { // a stream that does not start as the flood's request
		if _, _ = testkit.NewStream(seed).Read(first); first[0] != 'F' {
			break
		}
	}
	if err := testkit.EchoTrip(clients, seed, 8<<20, 20*time.Second, false); err != nil {
		t.Fatalf("another client's echo beside the stalled download: %v", err)
	}
	t.Logf("8 MiB echo beside the stalled download in %v", time.Since(start).Round(time.Millisecond))
	for name, p := range map[string]*testkit.Proc{"listentwo": relay, "connecttwo": agent} {
		grew := p.RSS(t) - rss0[name]
		t.Logf("%s: RSS %d KiB, %+d KiB since the links came up", name, p.RSS(t), grew)
		if grew > 24<<10 {
			t.Errorf("%s grew by %d KiB with a stalled download and an 8 MiB echo, want at most 24 MiB", name, grew)
		}
	}

	// The slow client reads again: its stream from the first byte, whole.
	_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := testkit.Receive(io.LimitReader(slow, 16<<20))
	if err != nil {
		t.Fatalf("the slow client reading again: %v", err)
	}
	if want := testkit.Expected(flood, 16<<20); got != want {
		t.Errorf("the slow client's first 16 MiB: %v, want %v", got, want)
	}
	slow.Close()
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)
	relay.Stop(t, syscall.SIGTERM, 5*time.Second)
}
