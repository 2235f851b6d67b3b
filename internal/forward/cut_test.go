package forward

import (
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// A connection that tcp-pf cuts on its own decision, at the end of --grace after a stop
// or on --idle-timeout, is reset on both sides while an upload is under way: the backend's
// read fails with ECONNRESET, not a clean EOF that would make the partial upload look
// complete, and so does the client's. The close line says it was cut, and why.
func TestCutIsReset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, host string
		cfg        Config
		stop       bool
		end        string
	}{
		{"grace", "127.0.0.1", Config{Grace: 300 * time.Millisecond}, true, `cut: stopped`},
		{"idle timeout", "[::1]", Config{IdleTimeout: 300 * time.Millisecond}, false, `cut: idle timeout`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ends := make(chan testkit.ReadEnd, 1)
			be := testkit.StartBackend(t, tc.host+":0", testkit.Sink(ends))
			tc.cfg.Dest = dest(t, be.Addr())
			pf := startServer(t, tc.host+":0", tc.cfg)
			c := testkit.Dial(t, pf.addr)
			const size = 1 << 20
			// The upload is sent, but not ended: no FIN, so only the client knows how
			// much was to come.
			if _, err := testkit.Send(c, 1, size); err != nil {
				t.Fatal(err)
			}
			pf.log.WaitFor(t, `open #1 `, 1, 5*time.Second)
			if tc.stop {
				go func() { _ = pf.stop() }()
			}
			testkit.WantReset(t, c, ends, size, 10*time.Second)
			pf.log.WaitFor(t, `close #1 .* end="`+tc.end+`"$`, 1, 5*time.Second)
		})
	}
}
