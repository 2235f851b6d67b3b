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
	svc := startModeService(t, "127.0.0.1")
	srv := newTLSServer(t)
	tn := &tunnel{}
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout, TLS: srv}, tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, TLS: pinned(t, srv.Pin), idleTrim: time.Hour}, tn)
	tn.waitPools(t, 1, 1)
	for i := range 40 {
		c := dial(t, tn.clients)
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		_, _ = io.WriteString(c, "stream\n")
		if l, err := readLineConn(c); err != nil || l != "ready\n" {
			t.Fatalf("%q, %v", l, err)
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
