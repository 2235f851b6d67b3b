package main

import (
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestStopsDuringTLSHandshakes: SIGTERM, or SIGINT, ends a listentwo with --tls-key within
// a second, with status 0, while links sit in every early phase: connected and silent, a
// TLS record header and nothing more, a whole ClientHello with no answer to the relay's
// flight. Two relays side by side, one for each signal (silent links wait a second in
// the kernel before they are accepted: that second is spent once). The relay's addresses
// are IPv6 loopback for the links and IPv4 for the clients.
func TestStopsDuringTLSHandshakes(t *testing.T) {
	bins := tunneltest.Build(t)
	key := filepath.Join(t.TempDir(), "relay.key")
	signals := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT}
	var relays []*testkit.Proc
	for range signals {
		clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
		links := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
		relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links, "--tls-key", key)
		relay.Log.WaitFor(t, `tls pin sha256/\S+$`, 1, testkit.Timeout)
		relay.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)
		relays = append(relays, relay)

		for i := 0; i < 8; i++ {
			testkit.Dial(t, links) // silent
		}
		for i := 0; i < 8; i++ { // a record header announcing a ClientHello that never comes
			c := testkit.Dial(t, links)
			if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}); err != nil {
				t.Fatal(err)
			}
		}
		// Whole ClientHellos: a TLS client over a connection that drops whatever the relay
		// answers, so the handshake waits in the relay after its ServerHello flight.
		for i := 0; i < 8; i++ {
			c := testkit.Dial(t, links)
			tc := tls.Client(swallowing{c}, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			go func() { _ = tc.Handshake() }() // ends when the relay closes the connection
		}
	}
	for i, relay := range relays {
		testkit.WaitUntil(t, testkit.Timeout, "24 connections on the relay's link port", func() bool {
			return relay.Sockets(t) >= 24+2
		})
		took := relay.Stop(t, signals[i], 5*time.Second)
		t.Logf("stopped after %v in %v", signals[i], took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("listentwo took %v to stop after %v with TLS handshakes under way, want at most 1s", took, signals[i])
		}
	}
}

// TestStopsDuringLoopHandshakes: SIGTERM ends a plain listentwo within a second, with
// status 0, while links sit in every phase of a handshake on its event loops: a first
// byte, an opening under way, the greeting sent and no reply; each link sees its end. The
// links come over IPv6 loopback, the clients' port is IPv4.
func TestStopsDuringLoopHandshakes(t *testing.T) {
	bins := tunneltest.Build(t)
	clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
	relay := testkit.Start(t, bins["listentwo"], "-s", clients, "-d", links)
	relay.Log.WaitFor(t, `listening for clients`, 1, testkit.Timeout)

	var conns []net.Conn
	for i := range 24 {
		c := testkit.Dial(t, links)
		switch i % 3 {
		case 0:
			c.Write([]byte("S"))
		case 1:
			c.Write([]byte("SHD-L"))
		case 2:
			c.Write([]byte("SHD-LINK/2\n"))
			_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
			if _, err := c.Read(make([]byte, 256)); err != nil {
				t.Fatalf("no greeting: %v", err)
			}
		}
		conns = append(conns, c)
	}
	testkit.WaitUntil(t, testkit.Timeout, "24 connections on the relay's link port", func() bool {
		return relay.Sockets(t) >= 24+2
	})
	took := relay.Stop(t, syscall.SIGTERM, 5*time.Second)
	t.Logf("stopped after %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("listentwo took %v to stop with loop handshakes under way, want at most 1s", took)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
		n, err := c.Read(make([]byte, 256))
		var ne net.Error
		if n > 0 || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("link %d: read %d bytes, %v after the stop; want its end", i, n, err)
		}
	}
}

// swallowing is a connection whose reads wait until it is closed: the relay's answers are
// never read.
type swallowing struct{ *net.TCPConn }

func (s swallowing) Read(b []byte) (int, error) {
	var one [1]byte
	for {
		if _, err := s.TCPConn.Read(one[:]); err != nil {
			return 0, err
		}
	}
}
