package tunnel

import (
	"testing"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
)

// Stopping listentwo or connecttwo with a relay open, while an upload is under way, resets
// the client and the service: both reads fail with ECONNRESET, not a clean EOF that would
// make the partial upload look complete. The side that stopped logs the cut.
func TestStopResetsOpenRelay(t *testing.T) {
	for _, side := range []string{"listentwo", "connecttwo"} {
		t.Run(side, func(t *testing.T) {
			ends := make(chan testkit.ReadEnd, 1)
			svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Sink(ends))
			svcEP, err := endpoint.ParseHostPort(svc.Addr())
			if err != nil {
				t.Fatal(err)
			}
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{Service: svcEP, Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			c := dial(t, tn.clients)
			const size = 1 << 20
			if _, err := testkit.Send(c, 1, size); err != nil { // no FIN: still to come
				t.Fatal(err)
			}
			tn.agentLog.wait(`open #1 `)
			stopper := tn.relayLog
			if side == "listentwo" {
				tn.stopRelay()
			} else {
				tn.stopAgent()
				stopper = tn.agentLog
			}
			testkit.WantReset(t, c, ends, size, testTimeout)
			stopper.wait(`close #1 .* end="cut: stopped"$`)
		})
	}
}
