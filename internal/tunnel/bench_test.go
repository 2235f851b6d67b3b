package tunnel

import (
	"io"
	"net"
	"testing"
)

// BenchmarkNewClient times a new client through the tunnel, from connect to the first
// echoed byte, with the pool refilled behind it (with TLS: a TLS handshake per client, on
// the replacement link, off the client's path).
func BenchmarkNewClient(b *testing.B) {
	for _, tc := range []struct {
		name       string
		hello, tls bool
	}{{"nohello", false, false}, {"hello", true, false}, {"hello-tls", true, true}} {
		hello := tc.hello
		b.Run(tc.name, func(b *testing.B) {
			svc := startService(b, "127.0.0.1", echoMode)
			var tn tunnel
			rc := RelayConfig{Hello: hello, Wait: testTimeout}
			ac := AgentConfig{Service: svc.ep(b), Hello: hello, Pool: 4}
			if tc.tls {
				srv := newTLSServer(b)
				rc.TLS, ac.TLS = srv, pinned(b, srv.Pin)
			}
			startRelay(b, "127.0.0.1", rc, &tn)
			startAgent(b, ac, &tn)
			tn.waitPools(b, 4, 4)
			addr := tn.clients.Addr().String()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write([]byte{'x'}); err != nil {
					b.Fatal(err)
				}
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
