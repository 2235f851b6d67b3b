package tunnel

import (
	"io"
	"net"
	"testing"
)

// BenchmarkNewClient times a new client through the tunnel, from connect to the first
// echoed byte, with the pool refilled behind it.
func BenchmarkNewClient(b *testing.B) {
	for _, hello := range []bool{false, true} {
		name := map[bool]string{false: "nohello", true: "hello"}[hello]
		b.Run(name, func(b *testing.B) {
			svc := startService(b, "127.0.0.1", echoMode)
			var tn tunnel
			startRelay(b, "127.0.0.1", RelayConfig{Hello: hello, Wait: testTimeout}, &tn)
			startAgent(b, AgentConfig{Service: svc.ep(b), Hello: hello, Pool: 4}, &tn)
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
