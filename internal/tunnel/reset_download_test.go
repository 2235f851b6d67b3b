package tunnel

import (
	"io"
	"testing"
	"time"
)

// TestAttackClientResetDuringDownload: a client that resets in the middle of a download
// through a TLS link, 40 times over on the same two links. The service must see a reset
// each time. It failed now and then (3 rounds in 600, or about one run in three of
// -count 5 with three instances at once): the service's stream wrote all 64 MiB ("eof")
// while listentwo drained it. The down direction's write to the client took the reset,
// the up direction's read from the client then got a plain EOF, and Join passed that on
// as a FIN, after which a session can send no RST. Join now takes an EOF from a socket
// the kernel closed, with no FIN sent to it, for the reset it is.
func TestAttackClientResetDuringDownload(t *testing.T) {
	resetDuringDownload(t, "127.0.0.1", true, false, 40)
}

// TestTLSResetAfterHalfClose: a client that half-closes its side (its request is complete)
// and then resets in the middle of the download, on a TLS link and on a plain one, over
// IPv4 and IPv6. The service must see a reset, as it does through a plain link (the
// kernel passes a RST after a FIN): a FIN frame went out first, and the reset after it
// must still reach connecttwo, or the rest of the download is drained as if the client
// had taken it.
func TestTLSResetAfterHalfClose(t *testing.T) {
	for _, mode := range []string{"tls", "plain"} {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(mode+"/"+host, func(t *testing.T) { resetDuringDownload(t, host, mode == "tls", true, 3) })
		}
	}
}

// resetDuringDownload runs a tunnel with one pooled link (TLS or plain) to a mode service,
// and rounds times over: a client asks for a stream, half-closes first when halfClose is
// set, reads 256 KiB of it and resets; the service must see the reset.
func resetDuringDownload(t *testing.T, host string, withTLS, halfClose bool, rounds int) {
	svc := startModeService(t, host)
	rc := RelayConfig{Hello: true, Wait: testTimeout}
	ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, idleTrim: time.Hour}
	if withTLS {
		srv := newTLSServer(t)
		rc.TLS, ac.TLS = srv, pinned(t, srv.Pin)
	}
	tn := &tunnel{}
	startRelay(t, host, rc, tn)
	startAgent(t, ac, tn)
	tn.waitPools(t, 1, 1)
	for i := range rounds {
		c := dial(t, tn.clients)
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		_, _ = io.WriteString(c, "stream\n")
		if l, err := readLineConn(c); err != nil || l != "ready\n" {
			t.Fatalf("%q, %v", l, err)
		}
		if halfClose {
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetLinger(0)
		c.Close()
		if e := waitEvent(t, svc); e != "reset" {
			t.Fatalf("round %d: the service saw %q, want the client's reset\nrelay:\n%s\nagent:\n%s", i, e, tn.relayLog, tn.agentLog)
		}
	}
}
