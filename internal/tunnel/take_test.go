package tunnel

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"testing"
	"time"
)

// TestAgentHelloInPieces: a relay that sends a taken link's hello in pieces, the client's
// data right behind its CRLF. connecttwo must take exactly the header off the link (the
// loop peeks and consumes only the header's bytes), pass it on with --send-proxy, and
// relay every byte after it, on both loopbacks.
func TestAgentHelloInPieces(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			svcLn := listen(t, host)
			got := make(chan []byte, 1)
			go func() {
				c, err := svcLn.AcceptTCP()
				if err != nil {
					got <- nil
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				b, _ := io.ReadAll(c)
				got <- b
			}()
			links := listen(t, host)
			var tn tunnel
			tn.links = links
			startAgent(t, AgentConfig{Relay: epOf(t, links.Addr()), Service: epOf(t, svcLn.Addr()), Hello: true, SendProxy: true, Pool: 1}, &tn)
			link, err := links.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			defer link.Close()
			err = serverHandshake(link, linkParams{hello: true, rand: rand.Reader, timeout: testTimeout}, serverHooks{
				admit: func() error { return nil }, release: func() {}})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if err := tn.agent.WaitIdle(ctxT(t), 1); err != nil {
				t.Fatal(err)
			}
			hello := "PROXY TCP4 192.0.2.7 198.51.100.1 40001 80\r\n"
			data := make([]byte, 200<<10)
			_, _ = rand.Read(data)
			// The pieces go out as separate segments (no delay); the pauses only make it
			// likely that the agent sees them one at a time, which the check does not need.
			for _, piece := range []string{hello[:3], hello[3:20], hello[20 : len(hello)-1]} {
				if _, err := io.WriteString(link, piece); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := link.Write(append([]byte(hello[len(hello)-1:]), data...)); err != nil {
				t.Fatal(err)
			}
			if err := link.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			var b []byte
			select {
			case b = <-got:
			case <-time.After(testTimeout):
				t.Fatal("the service got nothing")
			}
			want := append([]byte(hello), data...)
			if !bytes.Equal(b, want) {
				t.Fatalf("the service got %d bytes starting %q, want %d starting %q", len(b), b[:min(len(b), 60)], len(want), want[:60])
			}
			tn.agentLog.wait(fmt.Sprintf(`open #1 192\.0\.2\.7:40001 \(link #1\) -> %s`, regexpQuote(epOf(t, svcLn.Addr()).String())))
		})
	}
}
