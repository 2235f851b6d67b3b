package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestAttackStopWhileLinking: SIGTERM or SIGINT, with a SIGHUP just before it (a reload
// pending), ends connecttwo within a second, status 0, in the phases before any link is
// up: every link's connect unanswered (a relay whose accept queue is full, IPv4), a relay
// that accepts and never speaks (its TLS handshake waits for the ServerHello, IPv6), and
// the same for plain links with --secret-file (the greeting never comes).
func TestAttackStopWhileLinking(t *testing.T) {
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A relay that takes the connections and never answers.
	mute := testkit.Listen(t, "[::1]:0")
	held := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	t.Cleanup(func() {
		mute.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	pin := "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	black := testkit.BlackholeAt(t, netip.MustParseAddrPort("127.0.0.1:0")).String()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"connect-unanswered", []string{"-s", black}},
		{"tls-handshake-unanswered", []string{"-s", mute.Addr().String(), "--tls-pin", pin}},
		{"greeting-unanswered", []string{"-s", mute.Addr().String(), "--secret-file", secret}},
	} {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			t.Run(tc.name+"/"+sig.String(), func(t *testing.T) {
				before := len(held)
				p := testkit.Start(t, bins["connecttwo"], append(tc.args, "-d", svc.Addr(), "--pool", "4")...)
				p.WaitLog(t, `keeping 4 links open`, 1, testkit.Timeout)
				if tc.name == "connect-unanswered" {
					testkit.WaitUntil(t, testkit.Timeout, "the links' connects under way", func() bool {
						return p.Sockets(t) >= 4
					})
				} else {
					testkit.WaitUntil(t, testkit.Timeout, "4 links at the mute relay", func() bool {
						return len(held) >= before+4
					})
				}
				p.Signal(t, syscall.SIGHUP)
				took := p.Stop(t, sig, 5*time.Second)
				t.Logf("stopped %v after %v", took.Round(time.Millisecond), sig)
				if took > time.Second {
					t.Errorf("connecttwo took %v to stop after %v with links %s, want at most 1s", took, sig, tc.name)
				}
			})
		}
	}
}
