package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestShortBesideBulkOneLoop: tcp-pf with one event loop (GOMAXPROCS=1) relays four bulk
// streams both ways at full speed; short connections (connect, a 64-byte echo, close) made
// beside them must each complete within a generous bound, and the echoes come back whole
// (every short echo byte for byte), over IPv4 and IPv6.
func TestShortBesideBulkOneLoop(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			be := testkit.StartBackend(t, net.JoinHostPort(host, "0"), func(c *net.TCPConn) {
				var kind [1]byte
				if _, err := io.ReadFull(c, kind[:]); err != nil {
					return
				}
				if kind[0] == 'e' {
					testkit.Echo(c)
					return
				}
				// A bulk stream: send until the client goes, and read what it sends.
				go func() { _, _ = io.Copy(io.Discard, c) }()
				_, _ = io.Copy(c, testkit.NewStream(1))
			})
			p := startPF(t, host, "GOMAXPROCS=1 exec", "-d", be.Addr(), "-q", "--grace", "0")
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i := range 4 {
				c := testkit.Dial(t, p.addr)
				if _, err := c.Write([]byte("b")); err != nil {
					t.Fatal(err)
				}
				wg.Add(2)
				go func() {
					defer wg.Done()
					_, _ = io.Copy(c, testkit.NewStream(uint64(i+2)))
				}()
				go func() {
					defer wg.Done()
					_, _ = io.Copy(io.Discard, c)
				}()
				context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
			}
			// Once all four stream both ways, short connections beside them.
			testkit.WaitUntil(t, testkit.Timeout, "four bulk streams under way", func() bool {
				return p.Sockets(t) >= 9 // the listener and 4 pairs
			})
			msg := bytes.Repeat([]byte("short!!!"), 8)
			var worst, total time.Duration
			for range 10 {
				start := time.Now()
				c := testkit.Dial(t, p.addr)
				_ = c.SetDeadline(time.Now().Add(testkit.Timeout))
				if _, err := c.Write(append([]byte("e"), msg...)); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("short connection beside the streams: %q, %v", got, err)
				}
				c.Close()
				worst = max(worst, time.Since(start))
				total += time.Since(start)
			}
			cancel()
			wg.Wait()
			t.Logf("10 short connections beside 4 bulk streams: the slowest %v, the mean %v", worst, total/10)
			if worst > 3*time.Second {
				t.Errorf("a short connection beside 4 bulk streams on one loop took %v, want at most 3s", worst)
			}
			p.Stop(t, syscall.SIGTERM, 10*time.Second)
		})
	}
}
