package tunnel

import (
	"io"
	"testing"
	"time"
)

// TestTLSResetAfterHalfClose: a client that half-closes its side (its request is complete)
// and then resets in the middle of the download, on a TLS link, over IPv4 and IPv6. The
// service must see a reset, as it does through a plain link (the kernel passes a RST after a FIN): a FIN
// frame went out first, and the RST after it must still reach connecttwo, or the rest of
// the download is drained as if the client had taken it.
func TestTLSResetAfterHalfClose(t *testing.T) {
	for _, mode := range []string{"tls", "plain"} {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(mode+"/"+host, func(t *testing.T) { resetAfterHalfClose(t, host, mode == "tls") })
		}
	}
}

func resetAfterHalfClose(t *testing.T, host string, withTLS bool) {
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
	for i := range 3 {
		c := dial(t, tn.clients)
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		_, _ = io.WriteString(c, "stream\n")
		if l, err := readLineConn(c); err != nil || l != "ready\n" {
			t.Fatalf("%q, %v", l, err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
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
