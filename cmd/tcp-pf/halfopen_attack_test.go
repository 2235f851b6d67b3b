package main

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/sock"
	"shd-tcp-tools/internal/testkit"
)

// TestAttackHalfOpenIdle: peers that hold a relay with --lazy open while nothing moves,
// over IPv4 and IPv6. A client that half-closes after its request and then goes silent
// beside a server that never answers; and a client that stops reading (its receive
// window stays zero) while the server floods it. With --idle-timeout 1, tcp-pf must cut
// each within a few seconds, with a reset on both sides (never a FIN that ends the
// server's stream as if the client had it all), and log it as an idle cut.
func TestAttackHalfOpenIdle(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, kind := range []string{"fin-then-silence", "zero-window"} {
			t.Run(host+"/"+kind, func(t *testing.T) {
				t.Parallel()
				served := make(chan error, 1)
				be := testkit.StartBackend(t, net.JoinHostPort(host, "0"), func(c *net.TCPConn) {
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					if kind == "fin-then-silence" {
						if _, err := io.Copy(io.Discard, c); err != nil {
							served <- err
							return
						}
						// The client's FIN came; this side holds on and says nothing. Reads
						// after a FIN say EOF even once a reset came (Linux): the socket's
						// state tells, TCP_CLOSE from CLOSE_WAIT only by a reset.
						rc, err := c.SyscallConn()
						if err != nil {
							served <- err
							return
						}
						for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
							reset := false
							_ = rc.Control(func(fd uintptr) { reset = sock.PeerReset(int(fd)) })
							if reset {
								served <- syscall.ECONNRESET
								return
							}
						}
						served <- errors.New("no reset within 20s")
						return
					}
					if _, err := io.ReadFull(c, make([]byte, 100)); err != nil {
						served <- err
						return
					}
					buf := make([]byte, 64<<10)
					for {
						if _, err := c.Write(buf); err != nil {
							served <- err
							return
						}
					}
				})
				p := startPF(t, host, "", "-d", be.Addr(), "--lazy", "--idle-timeout", "1", "--grace", "0")
				d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) {
						_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
					})
				}}
				nc, err := d.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				c := nc.(*net.TCPConn)
				defer c.Close()
				if _, err := c.Write(make([]byte, 100)); err != nil {
					t.Fatal(err)
				}
				if kind == "fin-then-silence" {
					if err := c.CloseWrite(); err != nil {
						t.Fatal(err)
					}
				}
				start := time.Now()
				select {
				case err := <-served:
					if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
						t.Errorf("the server's connection ended with %v, want a reset", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("the server's connection still open 10s into an idle relay with --idle-timeout 1")
				}
				t.Logf("server's end %v after the client went quiet", time.Since(start).Round(time.Millisecond))
				p.Log.WaitFor(t, `close #1 .* end="cut: idle timeout"$`, 1, 5*time.Second)
				// The client drains what reached it, then meets the reset.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, c); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("the client's connection ended with %v, want a reset", err)
				}
				p.Stop(t, syscall.SIGTERM, 5*time.Second)
			})
		}
	}
}
